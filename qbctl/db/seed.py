"""qbctl db seed: realistic synthetic data, loaded with COPY, and the backend's Redis keys.

1-minute candles for N KRX symbols over D days of KRX sessions (09:00-15:30 KST, weekdays),
a random walk rounded to KRX tick sizes; two indicators per candle (sma_20, rsi_14); a few
orders and their trades per symbol and day; log lines. Then production's shape (db/shape.py,
docs/seed.md): the policies' own jobs run once, held from the scheduler from before the load, so the
bars are refreshed, retention applied and every chunk older than compress_after compressed, whatever
the seed's size and timing.

Seed never deletes rows it did not write. What it writes is marked: orders and trades by their
strategy (seed-momentum), log lines by their logger (qbctl.seed), candles and indicators by the
(symbol, time range) recorded in qbctl.seeded. Re-seeding a symbol replaces that symbol's earlier
seed and says how many rows that was. A symbol that holds 1-minute rows seed did not write is
refused (SEED_CONFLICT) unless --yes; with --yes those rows are kept, and seeded minutes that
would collide with them are left out (and out of the recorded ranges).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING

from qbctl.config.settings import Settings
from qbctl.db import connect, jobs, shape
from qbctl.errors import CheckFailed, QbctlError, Unavailable
from qbctl.events import Event, Events, Status, ignore
from qbctl.result import Result

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime

KST = timezone(timedelta(hours=9))
SESSION_MINUTES = 390  # 09:00 to 15:30
KNOWN = [
    ("005930", 71000),
    ("000660", 178000),
    ("035420", 185000),
    ("035720", 42000),
    ("005380", 240000),
    ("051910", 350000),
    ("006400", 380000),
    ("068270", 180000),
    ("105560", 78000),
    ("055550", 46000),
]
STRATEGY = "seed-momentum"
LOGGER = "qbctl.seed"
SEED_LOCK = 7_514_660_001  # pg_advisory_lock key: two seeds take turns
SEEDED_DDL = """
CREATE SCHEMA IF NOT EXISTS qbctl;
CREATE TABLE IF NOT EXISTS qbctl.seeded (
    tbl        text        NOT NULL,  -- market_data | technical_indicators
    symbol     text        NOT NULL,
    timeframe  text        NOT NULL,
    first_time timestamptz NOT NULL,
    last_time  timestamptz NOT NULL,  -- every row of tbl for symbol and timeframe in [first, last] is seed's
    seeded_at  timestamptz NOT NULL DEFAULT now()
);
"""
REFRESH_WAIT = 120.0  # seconds seed waits for another session's refresh of the same aggregate
MARKED = ("market_data", "technical_indicators")  # tables whose seeded rows are recorded as time ranges


def tick(price: float) -> int:
    """KRX tick size for a price band."""
    for limit, size in ((2000, 1), (5000, 5), (20000, 10), (50000, 50), (200000, 100), (500000, 500)):
        if price < limit:
            return size
    return 1000


def symbols(n: int) -> list[tuple[str, int]]:
    out = list(KNOWN[:n])
    rng = random.Random(7)
    i = 0
    while len(out) < n:
        i += 1
        out.append((f"{100000 + i * 37:06d}", rng.choice((3500, 12000, 48000, 95000, 260000))))
    return out


def session_minutes(days: int, now: datetime | None = None) -> list[datetime]:
    """Every trading minute of the weekdays in the last `days` days, oldest first (UTC)."""
    now = (now or datetime.now(UTC)).astimezone(KST)
    out = []
    for back in range(days - 1, -1, -1):
        day = (now - timedelta(days=back)).replace(hour=9, minute=0, second=0, microsecond=0)
        if day.weekday() >= 5:
            continue
        for m in range(SESSION_MINUTES):
            t = day + timedelta(minutes=m)
            if t <= now:
                out.append(t.astimezone(UTC))
    return out


@dataclass
class SeedResult(Result):
    database: str
    symbols: int
    days: int
    rows: dict[str, int] = field(default_factory=dict)
    replaced: dict[str, int] = field(default_factory=dict)  # rows of the earlier seed of these symbols, deleted
    kept: dict[str, int] = field(default_factory=dict)  # with --yes: 1-minute rows seed did not write, per symbol
    redis_keys: int = 0
    seconds: float = 0.0
    market_data_rows_per_second: float = 0.0
    notes: list[str] = field(default_factory=list)  # what a reader should know (a job that failed all the same)
    # TimescaleDB (empty without it): per hypertable with compression on, {chunks, compressed} as `db status`
    # counts them; each continuous aggregate -> how it was refreshed and why; the policies' jobs seed ran.
    compression: dict[str, dict] = field(default_factory=dict)
    refreshed: dict[str, str] = field(default_factory=dict)
    jobs_run: list[int] = field(default_factory=list)
    ok: bool = True
    error: QbctlError | None = None


@dataclass(frozen=True, kw_only=True)
class SeedOptions:
    symbols: int = 10
    days: int = 30
    redis: bool = True  # also fill the backend's Redis keys
    yes: bool = False  # seed symbols that hold rows seed did not write (those rows are kept)


def _candles(sym: str, start_price: int, stamps: list[str], rng: random.Random):
    """Yield (time, open, high, low, close, volume) rows of a random walk on the KRX tick grid."""
    price = float(start_price)
    for ts in stamps:
        step = tick(price)
        o = round(price / step) * step
        c = max(step, round(o * (1 + rng.gauss(0, 0.0012)) / step) * step)
        h = max(o, c) + step * int(abs(rng.gauss(0, 1.2)))
        lo = max(step, min(o, c) - step * int(abs(rng.gauss(0, 1.2))))
        v = int(rng.lognormvariate(7.5, 1.0))
        price = c
        yield ts, o, h, lo, c, v


def seed(
    settings: Settings, options: SeedOptions = SeedOptions(), events: Events = ignore, *, rt: Runtime
) -> SeedResult:
    import psycopg

    try:
        return _seed(settings, options, events, rt)
    except psycopg.Error as exc:
        raise connect.killed_error(exc, "db seed") or Unavailable(
            f"db seed: {' '.join(str(exc).split())[:300]}",
            code="DATABASE_UNAVAILABLE",
            hint="nothing of this seed was committed; `qbctl health` tells what is wrong",
        ) from None


def _seed(settings: Settings, options: SeedOptions, events: Events, rt: Runtime) -> SeedResult:
    t0 = time.monotonic()
    n_symbols, days, redis_keys = options.symbols, options.days, options.redis
    syms = symbols(n_symbols)
    names = [s for s, _ in syms]
    minutes = session_minutes(days)
    stamps = [m.isoformat() for m in minutes]
    result = SeedResult(settings.pg.masked(), n_symbols, days)
    rng = random.Random(42)
    total = len(syms)
    latest: dict[str, list] = {}
    with connect.connect(settings, wait=30, autocommit=True, events=events, rt=rt) as conn:
        if conn.execute("SELECT to_regclass('market_data') IS NULL").fetchone()[0]:
            raise CheckFailed(
                f"{settings.pg.masked()} has no market_data table",
                code="NOT_MIGRATED",
                hint="run `qbctl db migrate` first",
            )
        # Two seeds take turns, their holds of the jobs included (a session lock: it ends with the connection).
        conn.execute("SELECT pg_advisory_lock(%s)", (SEED_LOCK,))
        held = shape.hold(conn, events)
        try:
            with conn.transaction():
                conn.execute(SEEDED_DDL)
                foreign = foreign_rows(conn, names)
                if foreign and not options.yes:
                    raise _conflict(foreign)
                result.kept = {sym: sum(n.values()) for sym, n in foreign.items()}
                result.replaced = _clear(conn, names)
                md = ind = 0
                md_seconds = 0.0
                with conn.cursor() as cur:
                    for i, (sym, p0) in enumerate(syms):
                        candles, n_ind, seconds = _seed_symbol(cur, sym, p0, stamps, minutes, rng, sym in foreign)
                        md, ind, md_seconds = md + len(candles), ind + n_ind, md_seconds + seconds
                        latest[sym] = candles[-settings.values.max_candles_per_symbol :]
                        events(Event(Status.WORKING, f"seeding {sym}", done=i + 1, total=total))
                    result.rows["orders"], result.rows["trades"] = _trades(cur, syms, minutes, rng)
                    result.rows["system_logs"] = _logs(cur, minutes, rng)
            # The policies' jobs, outside a transaction (a refresh cannot run in one, a job commits per chunk).
            shaped = shape.run(
                conn,
                held,
                minutes[0] if md else None,
                events,
                lambda name, view: _refresh(conn, held.ts, name, view, events),
            )
        except BaseException:
            if not conn.closed:
                jobs.release(connect.psycopg_rows(conn), held, after_error=True)
            raise
        shape.release(conn, held, result.notes)
        bars = _bars(conn)
    _shaped(result, shaped)
    result.rows["market_data"] = md
    result.rows["technical_indicators"] = ind
    result.rows.update(bars)
    result.market_data_rows_per_second = round(md / md_seconds) if md_seconds else 0.0
    if redis_keys:
        result.redis_keys = _redis(settings, latest, rt)
    result.seconds = round(time.monotonic() - t0, 3)
    return result


def _seed_symbol(
    cur, sym: str, p0: int, stamps: list[str], minutes: list[datetime], rng: random.Random, foreign: bool
) -> tuple[list, int, float]:
    """One symbol's candles and indicators COPYed in, the ranges seeded recorded in qbctl.seeded;
    (its candles, the indicator rows written, the seconds market_data's COPY took). `foreign`: the
    symbol has rows of its own (only with --yes): the minutes they hold are left out."""
    candles = list(_candles(sym, p0, stamps, rng))
    lines = list(_indicator_lines(sym, candles))
    taken = {
        "market_data": [minutes[k] for k in range(len(candles))],
        "technical_indicators": [minutes[k] for k in range(20, len(candles))],
    }
    if foreign:
        busy = {t: _times(cur, t, sym, minutes) for t in MARKED}
        keep_md = [k for k, m in enumerate(taken["market_data"]) if m not in busy["market_data"]]
        keep_ind = [k for k, m in enumerate(taken["technical_indicators"]) if m not in busy["technical_indicators"]]
        candles = [candles[k] for k in keep_md]
        lines = [lines[k] for k in keep_ind]
        taken = {
            "market_data": [taken["market_data"][k] for k in keep_md],
            "technical_indicators": [taken["technical_indicators"][k] for k in keep_ind],
        }
    else:
        busy = {t: set() for t in MARKED}
    payload = "".join(f"{t}\t{sym}\t1m\t{o}\t{h}\t{lo}\t{c}\t{v}\n" for t, o, h, lo, c, v in candles)
    t1 = time.monotonic()  # the load rate: COPY itself, not the generation of the rows
    with cur.copy("COPY market_data (time, symbol, timeframe, open, high, low, close, volume) FROM STDIN") as copy:
        copy.write(payload)
    seconds = time.monotonic() - t1
    with cur.copy("COPY technical_indicators (time, symbol, timeframe, name, value) FROM STDIN") as copy:
        copy.write("".join(lines))
    for table in MARKED:
        for first, last in runs(taken[table], sorted(busy[table])):
            cur.execute(
                "INSERT INTO qbctl.seeded (tbl, symbol, timeframe, first_time, last_time)"
                " VALUES (%s, %s, '1m', %s, %s)",
                (table, sym, first, last),
            )
    return candles, 2 * len(lines), seconds


def _shaped(result: SeedResult, shaped: shape.Shape) -> None:
    """What the policies' jobs did, into the result: chunks compressed, bars refreshed, jobs run."""
    result.compression = {t: {"chunks": c["chunks"], "compressed": c["compressed"]} for t, c in shaped.chunks.items()}
    result.refreshed, result.jobs_run = shaped.refreshed, shaped.jobs_run
    for table, c in shaped.chunks.items():
        if c["left"]:
            result.notes.append(
                f"{table}: {c['left']} chunk(s) older than {c['compress_after']} are still not "
                "compressed after its compression policy's job ran: `qbctl db status` shows the job"
            )


MARKET_DATA = shape.MARKET_DATA  # the market_data seed writes (checks/load.py reads it too)


def _bars(conn) -> dict[str, int]:
    """The rows of each continuous aggregate of market_data (the 5-minute, hourly and daily bars)."""
    if not conn.execute("SELECT to_regclass('timescaledb_information.continuous_aggregates') IS NOT NULL").fetchone()[
        0
    ]:
        return {}
    return {
        name: conn.execute(f"SELECT count(*) FROM {view}").fetchone()[0]
        for name, view in conn.execute(shape.CAGGS_SQL).fetchall()
    }


def _refresh(conn, ts: str, name: str, view: str, events: Events, wait: float = REFRESH_WAIT) -> None:
    """One full refresh. The policies of the aggregates are held, but another session (the backend's own
    refresh, a policy qbctl does not know) may be refreshing an overlapping window: TimescaleDB then
    refuses a second refresh, and seed waits for that one and refreshes again."""
    import psycopg

    deadline = time.monotonic() + wait
    said = False
    while True:
        try:
            conn.execute(f"CALL {ts}.refresh_continuous_aggregate(%s::regclass, NULL, NULL)", (view,))
            return
        except psycopg.Error as exc:
            if "already in progress" not in str(exc) or time.monotonic() > deadline:
                raise
        if not said:
            events(Event(Status.WAITING, f"another session is refreshing {name}; waiting for it to finish"))
            said = True
        time.sleep(0.25)


def foreign_rows(conn, syms: list[str]) -> dict[str, dict[str, int]]:
    """1-minute rows of these symbols that seed did not write (outside every range it recorded),
    by symbol and table."""
    out: dict[str, dict[str, int]] = {}
    for table in MARKED:
        for sym, n in conn.execute(
            f"SELECT d.symbol, count(*) FROM {table} d WHERE d.symbol = ANY(%s) AND d.timeframe = '1m'"
            " AND NOT EXISTS (SELECT 1 FROM qbctl.seeded s WHERE s.tbl = %s AND s.symbol = d.symbol"
            " AND s.timeframe = d.timeframe AND d.time BETWEEN s.first_time AND s.last_time)"
            " GROUP BY d.symbol ORDER BY d.symbol",
            (syms, table),
        ):
            out.setdefault(sym, {})[table] = n
    return out


def _conflict(foreign: dict[str, dict[str, int]]) -> CheckFailed:
    shown = "; ".join(
        f"{sym}: " + ", ".join(f"{n:,} {table}" for table, n in tables.items())
        for sym, tables in list(foreign.items())[:5]
    )
    more = f" and {len(foreign) - 5} more symbols" if len(foreign) > 5 else ""
    who = f"{next(iter(foreign))} holds" if len(foreign) == 1 else f"{len(foreign)} of the symbols to seed hold"
    return CheckFailed(
        f"{who} 1-minute rows that db seed did not write ({shown}{more}); nothing was changed",
        code="SEED_CONFLICT",
        hint="pass --yes to seed them anyway (their rows are kept; seeded minutes that would "
        "collide are left out), or seed fewer symbols (--symbols N)",
        symbols={sym: dict(t) for sym, t in foreign.items()},
    )


def _times(cur, table: str, sym: str, minutes: list[datetime]) -> set[datetime]:
    """The times at which `table` holds 1-minute rows of `sym` within the seed's span."""
    if not minutes:
        return set()
    return {
        r[0]
        for r in cur.execute(
            f"SELECT DISTINCT time FROM {table} WHERE symbol = %s AND timeframe = '1m' AND time BETWEEN %s AND %s",
            (sym, minutes[0], minutes[-1]),
        )
    }


def runs(taken: list[datetime], busy: list[datetime]) -> list[tuple[datetime, datetime]]:
    """The seeded times as [first, last] ranges that hold no busy (foreign) time: recorded so that
    a later seed deletes exactly what this one wrote. Both lists sorted."""
    import bisect

    out: list[tuple[datetime, datetime]] = []
    for t in taken:
        if out and bisect.bisect_right(busy, out[-1][1]) == bisect.bisect_left(busy, t):
            out[-1] = (out[-1][0], t)  # no busy time between the run's end and t: the run goes on
        else:
            out.append((t, t))
    return out


def _clear(conn, syms: list[str]) -> dict[str, int]:
    """The earlier seed of these symbols goes first: re-seeding replaces, never doubles, and touches
    nothing it did not write. How many rows of each table that was."""
    gone: dict[str, int] = {}
    for table in MARKED:
        gone[table] = conn.execute(
            f"WITH d AS (DELETE FROM {table} d USING qbctl.seeded s WHERE s.tbl = %s AND s.symbol = ANY(%s)"
            " AND d.symbol = s.symbol AND d.timeframe = s.timeframe AND d.time BETWEEN s.first_time AND s.last_time"
            " RETURNING 1) SELECT count(*) FROM d",
            (table, syms),
        ).fetchone()[0]
    conn.execute("DELETE FROM qbctl.seeded WHERE symbol = ANY(%s)", (syms,))
    for table in ("trades", "orders"):  # trades first: they reference orders
        gone[table] = conn.execute(
            f"WITH d AS (DELETE FROM {table} WHERE strategy = %s AND symbol = ANY(%s)"
            " RETURNING 1) SELECT count(*) FROM d",
            (STRATEGY, syms),
        ).fetchone()[0]
    gone["system_logs"] = conn.execute(
        "WITH d AS (DELETE FROM system_logs WHERE logger = %s RETURNING 1) SELECT count(*) FROM d", (LOGGER,)
    ).fetchone()[0]
    return gone


def _indicator_lines(sym: str, candles: list):
    closes = [c[4] for c in candles]
    gains = losses = 0.0
    for i in range(1, len(closes)):
        d = closes[i] - closes[i - 1]
        gains, losses = gains * 13 / 14 + max(d, 0) / 14, losses * 13 / 14 + max(-d, 0) / 14
        if i >= 20:
            t = candles[i][0]
            sma = sum(closes[i - 19 : i + 1]) / 20
            rsi = 100.0 if losses == 0 else 100 - 100 / (1 + gains / losses)
            yield f"{t}\t{sym}\t1m\tsma_20\t{sma:.2f}\n{t}\t{sym}\t1m\trsi_14\t{rsi:.2f}\n"


def _trades(cur, syms, minutes, rng) -> tuple[int, int]:
    if not minutes:
        return 0, 0
    orders = []
    for sym, p0 in syms:
        for day_start in range(0, len(minutes), SESSION_MINUTES):
            for _ in range(2):
                t = minutes[min(len(minutes) - 1, day_start + rng.randrange(SESSION_MINUTES))]
                price = round(p0 * (1 + rng.gauss(0, 0.02)) / tick(p0)) * tick(p0)
                orders.append((t, sym, rng.choice(("buy", "sell")), rng.choice((1, 5, 10, 20)), price))
    rows = cur.execute(
        "INSERT INTO orders (created_at, updated_at, symbol, side, order_type, quantity, price, status, strategy,"
        " broker_order_id) SELECT t, t, s, side, 'limit', q, p, 'filled', %s, lpad((row_number() OVER ())::text, 10,"
        " '0') FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::bigint[], %s::numeric[]) AS u(t, s, side,"
        " q, p) RETURNING id, created_at, symbol, side, quantity, price",
        (
            STRATEGY,
            [o[0] for o in orders],
            [o[1] for o in orders],
            [o[2] for o in orders],
            [o[3] for o in orders],
            [o[4] for o in orders],
        ),
    ).fetchall()
    with cur.copy("COPY trades (time, order_id, symbol, side, quantity, price, fee, strategy) FROM STDIN") as copy:
        for oid, t, sym, side, q, p in rows:
            copy.write_row(
                (
                    t + timedelta(seconds=rng.randrange(1, 30)),
                    oid,
                    sym,
                    side,
                    q,
                    p,
                    round(float(p) * q * 0.00015, 2),
                    STRATEGY,
                )
            )
    return len(rows), len(rows)


def _logs(cur, minutes, rng) -> int:
    levels = ("DEBUG",) * 6 + ("INFO",) * 10 + ("WARNING",) * 3 + ("ERROR",)
    messages = {
        "DEBUG": "tick processed",
        "INFO": "candle closed",
        "WARNING": "KIS API slow response",
        "ERROR": "KIS API request failed, retrying",
    }
    n = 0
    with cur.copy("COPY system_logs (time, level, logger, message, context) FROM STDIN") as copy:
        for t in minutes[::3]:
            level = rng.choice(levels)
            copy.write_row((t, level, LOGGER, messages[level], json.dumps({"latency_ms": rng.randrange(5, 900)})))
            n += 1
    return n


def _redis(settings: Settings, latest: dict[str, list], rt: Runtime) -> int:
    import redis as redis_lib

    rd = settings.redis
    client = connect.redis_client(settings, timeout=5, rt=rt)
    cap = settings.values.max_candles_per_symbol
    try:
        pipe = client.pipeline(transaction=False)
        for sym, candles in latest.items():
            if not candles:
                continue
            t, o, h, lo, c, v = candles[-1]
            prev = candles[-2][4] if len(candles) > 1 else o
            pipe.hset(
                f"market:{sym}",
                mapping={"price": c, "open": o, "high": h, "low": lo, "volume": v, "change": c - prev, "time": t},
            )
            key = f"candles:{sym}:1m"
            pipe.delete(key)
            pipe.lpush(
                key, *[json.dumps({"t": x[0], "o": x[1], "h": x[2], "l": x[3], "c": x[4], "v": x[5]}) for x in candles]
            )
            pipe.ltrim(key, 0, cap - 1)
            closes = [x[4] for x in candles[-20:]]
            pipe.hset(f"indicators:{sym}", mapping={"sma_20": round(sum(closes) / len(closes), 2), "time": t})
        pipe.execute()
    except (redis_lib.RedisError, OSError) as exc:
        raise Unavailable(
            f"cannot write the Redis keys at {rd.masked()}: {exc}",
            code="REDIS_UNAVAILABLE",
            hint="`qbctl up redis` starts it, or pass --no-redis",
        ) from None
    finally:
        client.close()
    return 3 * len([s for s, c in latest.items() if c])
