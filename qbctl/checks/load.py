"""`qbctl budget --load`: a workload shaped like the QB backend, and what it costs.

PostgreSQL: as many sessions as the server allows ordinary users, each running the backend's
kinds of queries on the seeded data (newest candles of a symbol, daily bars with time_bucket,
a ranking across all symbols, trades joined with candles, inserts of new candles), while the
compression policy's job and a VACUUM (the memory of an autovacuum worker) run beside them.
Redis: the backend's key families at a set rate (market hashes, capped candle lists, indicator
hashes, pub/sub events with a subscriber, cache keys with a TTL), filled until maxmemory evicts,
with a background save when the server is configured to make them.

Measured from the engine's stats API (works on cgroup v1 and v2, on a remote engine): each
container's peak memory without reclaimable page cache and with it; kills by the kernel (the
container's own cgroup counter, PostgreSQL's log, restarts); Redis evictions per family; latency
percentiles. The rows the load inserts carry symbols of their own (LOAD0000...) and are deleted
at the end; the job run is the declared compression policy, doing what its schedule would do.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qbctl.checks.kills import oom_kills, pg_kills
from qbctl.checks.load_redis import RedisLoad
from qbctl.config.settings import Settings
from qbctl.errors import CheckFailed, QbctlError, Unavailable
from qbctl.events import Event, Events, Status, ignore

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime

SAMPLE_EVERY = 0.2  # seconds between memory samples
LOAD_SYMBOL = "LOAD"  # prefix of the symbols whose candles the load inserts (and deletes afterwards)
QUERY_MIX = (("newest candles", 35), ("daily bars", 20), ("ranking", 10), ("pnl join", 10), ("insert candles", 25))

QUERIES = {
    "newest candles": "SELECT time, open, high, low, close, volume FROM market_data WHERE symbol = %s"
    " AND timeframe = '1m' ORDER BY time DESC LIMIT 200",
    "daily bars": "SELECT {bucket} AS day, {first_open}, max(high), min(low), {last_close}, sum(volume)"
    " FROM market_data WHERE symbol = %s AND timeframe = '1m' AND time > now() - INTERVAL '28 days'"
    " GROUP BY 1 ORDER BY 1",  # by position: GROUP BY day would pick a column named day
    "ranking": "SELECT symbol, {last_close} / NULLIF({first_open}, 0) - 1 AS ret, sum(volume) AS vol"
    " FROM market_data WHERE timeframe = '1m' AND time > now() - INTERVAL '7 days'"
    " GROUP BY symbol ORDER BY ret DESC NULLS LAST, vol DESC",
    # Unrealised P&L of the last month's trades at each symbol's latest close.
    "pnl join": "SELECT t.strategy, t.symbol, sum(t.quantity * (m.close - t.price)"
    " * CASE t.side WHEN 'buy' THEN 1 ELSE -1 END) AS pnl, count(*)"
    " FROM trades t JOIN (SELECT DISTINCT ON (symbol) symbol, close FROM market_data"
    " WHERE timeframe = '1m' AND time > now() - INTERVAL '4 days' ORDER BY symbol, time DESC) m"
    " ON m.symbol = t.symbol WHERE t.time > now() - INTERVAL '30 days' GROUP BY 1, 2 ORDER BY pnl DESC",
}
TSDB_FUNCS = {
    "bucket": "time_bucket('1 day', time)",
    "first_open": "first(open, time)",
    "last_close": "last(close, time)",
}
PLAIN_FUNCS = {
    "bucket": "date_trunc('day', time)",
    "first_open": "(array_agg(open ORDER BY time))[1]",
    "last_close": "(array_agg(close ORDER BY time DESC))[1]",
}


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    seconds: float = 60.0
    redis_rate: int = 2000  # Redis writes per second across the families, after the fill


@dataclass
class Latency:
    count: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None


@dataclass
class ServiceLoad:
    """What one container went through during the load."""

    name: str
    limit_bytes: int | None = None
    peak_bytes: int | None = None  # without reclaimable page cache (what the kernel cannot simply drop)
    peak_with_cache_bytes: int | None = None
    kills: list[str] = field(default_factory=list)  # each with its evidence and time
    restarts: int = 0


@dataclass
class LoadReport:
    seconds: float
    sessions: int
    services: dict[str, ServiceLoad]
    queries: dict[str, Latency]
    redis: dict = field(default_factory=dict)  # get latency, evictions per family, rss peak, bgsave
    notes: list[str] = field(default_factory=list)


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (nearest rank) of values; None for none."""
    if not values:
        return None
    import math

    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[k]


def latency(samples: list[float], errors: int = 0) -> Latency:
    ms = [s * 1000 for s in samples]
    return Latency(len(ms), errors, _r(percentile(ms, 50)), _r(percentile(ms, 99)), _r(max(ms) if ms else None))


def _r(x: float | None) -> float | None:
    return round(x, 2) if x is not None else None


class Runner:
    """One run of the load. `run()` returns a LoadReport; nothing is printed."""

    def __init__(self, settings: Settings, options: LoadOptions, events: Events = ignore, *, rt: Runtime):
        self.settings, self.options, self.events, self.rt = settings, options, events, rt
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.samples: dict[str, list[float]] = {k: [] for k, _ in QUERY_MIX}
        self.errors: dict[str, int] = {k: 0 for k, _ in QUERY_MIX}
        self.error_texts: list[str] = []
        self.notes: list[str] = []

    # --- preparation ---------------------------------------------------------------------------
    def _containers(self):
        eng = self.rt.engine
        found = {c.service: c for c in eng.containers(self.settings.project, running_only=True)}
        missing = [
            s
            for s in ("postgres", "redis")
            if s not in found and (self.settings.pg if s == "postgres" else self.settings.redis).is_local
        ]
        if missing:
            raise Unavailable(
                f"{', '.join(missing)} of project {self.settings.project} not running",
                code="NOT_RUNNING",
                hint="`qbctl up` starts the stack; then `qbctl db seed`",
            )
        return eng, found

    def _symbols(self, conn) -> list[str]:
        if conn.execute("SELECT to_regclass('market_data') IS NULL").fetchone()[0]:
            raise CheckFailed(
                f"{self.settings.pg.masked()} has no market_data table: nothing to load",
                code="NOT_SEEDED",
                hint="run `qbctl db migrate` and `qbctl db seed` first",
            )
        rows = conn.execute(
            "SELECT DISTINCT symbol FROM market_data WHERE timeframe = '1m'"
            " AND time > now() - INTERVAL '40 days' AND symbol NOT LIKE %s LIMIT 5000",
            (LOAD_SYMBOL + "%",),
        ).fetchall()
        if not rows:
            raise CheckFailed(
                f"{self.settings.pg.masked()} holds no candles: the load reads the seeded data",
                code="NOT_SEEDED",
                hint="run `qbctl db seed` first (e.g. --symbols 200 --days 30, the backend's size)",
            )
        return [r[0] for r in rows]

    # --- PostgreSQL --------------------------------------------------------------------------------
    def _session(self, n: int, symbols: list[str], sql: dict[str, str], insert_symbols: list[str]) -> None:
        import psycopg

        from qbctl.db import connect

        rng = random.Random(n)
        kinds = [k for k, w in QUERY_MIX for _ in range(w)]
        conn = None
        minute = 0
        while not self.stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = connect.connect(self.settings, wait=5, rt=self.rt)
                kind = rng.choice(kinds)
                started = time.perf_counter()
                if kind == "insert candles":
                    minute += 1
                    with conn.cursor() as cur:  # one new 1-minute candle per symbol, as the collector writes
                        cur.executemany(
                            "INSERT INTO market_data (time, symbol, timeframe, open, high, low, close, volume)"
                            " VALUES (date_trunc('minute', now()) - make_interval(mins => %s, secs => %s),"
                            " %s, '1m', 100, 101, 99, 100, 1000) ON CONFLICT DO NOTHING",
                            [(minute, n, s) for s in insert_symbols],
                        )
                elif kind == "ranking" or kind == "pnl join":
                    conn.execute(sql[kind]).fetchall()
                else:
                    conn.execute(sql[kind], (rng.choice(symbols),)).fetchall()
                elapsed = time.perf_counter() - started
                with self.lock:
                    self.samples[kind].append(elapsed)
            except QbctlError as exc:
                self._error("connect", exc.message)
                time.sleep(0.5)
            except psycopg.Error as exc:
                self._error(locals().get("kind", "connect"), " ".join(str(exc).split())[:200])
                try:
                    if conn is not None:
                        conn.close()
                except Exception:  # noqa: BLE001 - a dead connection
                    pass
                conn = None
                time.sleep(0.2)
        if conn is not None:
            conn.close()

    def _error(self, kind: str, text: str) -> None:
        with self.lock:
            if kind in self.errors:
                self.errors[kind] += 1
            if len(self.error_texts) < 20:
                self.error_texts.append(f"{kind}: {text}")

    def _maintenance(self, tsdb: bool) -> None:
        """The compression policy's job and a VACUUM, while the sessions run."""
        import psycopg

        from qbctl.db import connect, timescale
        from qbctl.db.seed import MARKET_DATA

        try:
            with connect.connect(self.settings, rt=self.rt) as conn:
                if tsdb:  # the policy of the market_data the load reads, not a namesake's in another schema
                    job = conn.execute(
                        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name ="
                        " 'policy_compression' AND (hypertable_schema, hypertable_name) = " + MARKET_DATA
                    ).fetchone()
                    if job:
                        self.events(Event(Status.WORKING, f"compression job {job[0]} running", "postgres"))
                        conn.execute(
                            f"CALL {timescale.extension_schema(connect.psycopg_rows(conn))}.run_job(%s)", (job[0],)
                        )
                        self.notes.append(f"postgres: ran the compression policy's job {job[0]} during the load")
                if not self.stop.is_set():
                    conn.execute("VACUUM (ANALYZE) market_data")
                    self.notes.append(
                        "postgres: ran VACUUM (ANALYZE) market_data during the load (an autovacuum worker's memory)"
                    )
        except (psycopg.Error, QbctlError) as exc:
            self._error("maintenance", str(getattr(exc, "message", exc))[:200])

    def _cleanup(self) -> None:
        import psycopg

        from qbctl.db import connect

        try:
            with connect.connect(self.settings, wait=30, rt=self.rt) as conn:
                conn.execute("DELETE FROM market_data WHERE symbol LIKE %s", (LOAD_SYMBOL + "%",))
        except (psycopg.Error, QbctlError) as exc:
            self.notes.append(
                f"postgres: could not delete the load's own candles ({LOAD_SYMBOL}...): {getattr(exc, 'message', exc)}"
            )

    # --- Redis -------------------------------------------------------------------------------------
    # --- measuring ---------------------------------------------------------------------------------
    def _sampler(self, eng, cids: dict[str, str], peaks: dict[str, ServiceLoad], redis_peak: dict) -> None:
        from qbctl.db.connect import redis_client

        rclient = redis_client(self.settings, timeout=1, rt=self.rt) if "redis" in cids else None
        while not self.stop.is_set():
            for name, cid in cids.items():
                m = eng.memory(cid)
                if m is None:
                    continue
                s = peaks[name]
                s.limit_bytes = m.limit or s.limit_bytes
                s.peak_bytes = max(s.peak_bytes or 0, m.without_cache)
                s.peak_with_cache_bytes = max(s.peak_with_cache_bytes or 0, m.usage)
            if rclient is not None:
                try:
                    info = rclient.info("memory")
                    redis_peak["rss_bytes"] = max(redis_peak.get("rss_bytes", 0), int(info["used_memory_rss"]))
                    redis_peak["used_bytes"] = max(redis_peak.get("used_bytes", 0), int(info["used_memory"]))
                    redis_peak["fragmentation"] = max(
                        redis_peak.get("fragmentation", 0.0), float(info.get("mem_fragmentation_ratio", 0))
                    )
                except Exception:  # noqa: BLE001 - a Redis being killed: the kill is reported from its evidence
                    pass
            self.stop.wait(SAMPLE_EVERY)

    # --- the run ---------------------------------------------------------------------------------
    def _warm_postgres(self) -> tuple[list[str], bool, int]:
        """(the seeded symbols, whether TimescaleDB is there, how many load sessions), with the data read
        into shared_buffers first."""
        from qbctl.db import connect

        with connect.connect(self.settings, wait=10, rt=self.rt) as conn:
            symbols = self._symbols(conn)
            tsdb = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()[0] > 0
            # Fill shared_buffers with the data, as days of uptime do: each chunk is read whole (a chunk is
            # smaller than a quarter of shared_buffers, so its scan is not confined to a ring of buffers).
            self.events(Event(Status.WORKING, "reading the data into shared_buffers", "postgres"))
            for table in ("market_data", "technical_indicators"):
                conn.execute(f"SELECT count(*) FROM {table}")
            # Every connection an ordinary user may open, less those already open (ours is closed first).
            allowed = conn.execute(
                "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')"
                "::int - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                " AND pid <> pg_backend_pid())"
            ).fetchone()[0]
        return symbols, tsdb, max(1, allowed)  # the maintenance session (a job, VACUUM) takes a reserved one

    def _wait_out_the_load(self, rclient, rconf: dict) -> str | None:
        """The load's seconds, progress every half second; a third in, a background save of Redis (where the
        server saves at all): what became of it, None when none was started."""
        bgsave = None
        load_start = time.monotonic()
        saved = False
        while (elapsed := time.monotonic() - load_start) < self.options.seconds:
            if not saved and rconf.get("save") and elapsed > self.options.seconds / 3:
                try:
                    rclient.bgsave()
                    bgsave = f"BGSAVE started at {elapsed:.0f}s of the load (the server's save rule: {rconf['save']})"
                except Exception as exc:  # noqa: BLE001 - already saving: that is the same fork
                    bgsave = f"a background save was under way at {elapsed:.0f}s ({exc})"
                saved = True
            self.events(
                Event(
                    Status.WORKING,
                    f"load: {elapsed:.0f}s of {self.options.seconds:.0f}s",
                    done=elapsed,
                    total=self.options.seconds,
                )
            )
            time.sleep(0.5)
        return bgsave

    @staticmethod
    def _count_kills(eng, cids: dict[str, str], before: dict, peaks: dict[str, ServiceLoad], started_at: int) -> None:
        """What the load killed, per service: the cgroup's OOM kills, restarts, PostgreSQL's log lines."""
        for name, cid in cids.items():
            st_before, ooms_before = before[name]
            st = eng.state(cid)
            s = peaks[name]
            s.restarts = st.restart_count - st_before.restart_count
            ooms = oom_kills(eng, cid)
            if ooms is not None and ooms_before is not None and ooms > ooms_before:
                s.kills.append(
                    f"the kernel killed {ooms - ooms_before} process(es) in the container "
                    "(its cgroup's oom_kill counter)"
                )
            if s.restarts:
                s.kills.append(f"the container restarted {s.restarts}x" + (" (OOMKilled)" if st.oom_killed else ""))
            if name == "postgres":
                lines = pg_kills("\n".join(eng.tail_logs(cid, 5000, since=started_at)))
                s.kills += [f"log: {line[:200]}" for line in lines[:5]]

    def run(self) -> LoadReport:
        from qbctl.db.connect import redis_client

        eng, found = self._containers()
        cids = {name: c.id for name, c in found.items() if name in ("postgres", "redis")}
        before = {name: (eng.state(cid), oom_kills(eng, cid)) for name, cid in cids.items()}
        started_at = int(time.time())
        redis_load = RedisLoad(self.settings, self.options, self.events, self.stop, rt=self.rt)
        symbols, tsdb, sessions = self._warm_postgres()
        funcs = TSDB_FUNCS if tsdb else PLAIN_FUNCS
        sql = {k: q.format(**funcs) for k, q in QUERIES.items()}
        insert_symbols = [f"{LOAD_SYMBOL}{i:04d}" for i in range(min(200, len(symbols)))]

        rclient = redis_client(self.settings, timeout=5, rt=self.rt)
        rconf = {
            k: v
            for k, v in rclient.config_get("*").items()
            if k in ("maxmemory", "save", "notify-keyspace-events", "appendonly")
        }
        db = self.settings.redis.db
        channel = f"__keyevent@{db}__:evicted"
        rclient.config_set("notify-keyspace-events", "Ee")
        peaks = {name: ServiceLoad(name) for name in cids}
        redis_peak: dict = {}
        evicted: dict[str, int] = {}
        get_samples: list[float] = []
        threads = [
            threading.Thread(target=self._sampler, args=(eng, cids, peaks, redis_peak), daemon=True),
            threading.Thread(target=redis_load.subscriber, args=(channel, evicted), daemon=True),
        ]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        bgsave = "none: the server makes no background saves (save '')"
        try:
            self.events(Event(Status.WORKING, "filling Redis until it evicts", "redis"))
            filled = redis_load.fill(rclient, int(rconf.get("maxmemory", 0)))
            self.notes.append(f"redis: {filled} cache keys written before the steady load (until eviction)")
            load_threads = [
                threading.Thread(target=self._session, args=(i, symbols, sql, insert_symbols), daemon=True)
                for i in range(sessions)
            ]
            load_threads += [
                threading.Thread(target=self._maintenance, args=(tsdb,), daemon=True),
                threading.Thread(target=redis_load.writer, args=(symbols,), daemon=True),
                threading.Thread(target=redis_load.probe, args=(symbols, get_samples), daemon=True),
            ]
            for t in load_threads:
                t.start()
            bgsave = self._wait_out_the_load(rclient, rconf) or bgsave
        finally:
            self.stop.set()
            for t in threads:
                t.join(5)
            try:
                rclient.config_set("notify-keyspace-events", rconf.get("notify-keyspace-events", ""))
                redis_load.cleanup(rclient)
            except Exception:  # noqa: BLE001 - a Redis that was killed: nothing to restore
                pass
            self._cleanup()
        seconds = round(time.monotonic() - t0, 1)
        self._count_kills(eng, cids, before, peaks, started_at)
        try:
            bg_status = rclient.info().get("rdb_last_bgsave_status")
        except Exception:  # noqa: BLE001
            bg_status = None
        finally:
            rclient.close()
        redis = {
            "get": latency(get_samples),
            "evicted": {k: v for k, v in evicted.items() if not k.startswith("_")},
            "events_received": evicted.get("_events_received", 0),
            "bgsave": bgsave,
            "bgsave_status": bg_status,
            "errors": redis_load.errors[:10],
            **redis_peak,
            "maxmemory": int(rconf.get("maxmemory", 0)),
            "save": rconf.get("save", ""),
        }
        if bg_status == "err":
            peaks.get("redis", ServiceLoad("redis")).kills.append(
                "the background save failed (its forked child was killed: rdb_last_bgsave_status err)"
            )
        queries = {k: latency(v, self.errors[k]) for k, v in self.samples.items()}
        report = LoadReport(
            seconds,
            sessions,
            peaks,
            queries,
            redis,
            self.notes + [f"postgres error: {e}" for e in self.error_texts[:5]],
        )
        return report
