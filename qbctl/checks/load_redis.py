"""The Redis half of `qbctl budget --load`: the backend's key families, written until Redis evicts.

Families at a set rate (market hashes, capped candle lists, indicator hashes, pub/sub events read
by a subscriber, cache keys with a TTL), evictions counted per family from keyspace notifications,
and GET latency timed from a process of its own. The load's own keys carry LOAD_CACHE and are
deleted afterwards.
"""

from __future__ import annotations

import random
import threading
import time
from typing import TYPE_CHECKING

from qbctl.config.settings import Settings
from qbctl.events import Event, Events, Status

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime

LOAD_CACHE = "cache:qbctl-load:"  # prefix of the cache keys the load writes (and deletes afterwards)


def probe_redis(settings: Settings, symbols: list[str], stop, conn) -> None:
    """The GET probe's own process: an HGET of a market hash every 5 ms until `stop`; its timings."""
    from qbctl.db.connect import redis_client
    from qbctl.engine.runtime import Runtime

    # A spawned process shares nothing with the command's Runtime: it has its own, so its own way to Redis (with
    # an ssh engine, its own ssh connection, not the one the load's traffic fills), closed when the probe ends.
    with Runtime() as rt:
        _probe(redis_client(settings, timeout=2, rt=rt), symbols, stop, conn)


def _probe(client, symbols: list[str], stop, conn) -> None:
    import redis as redis_lib

    rng = random.Random(3)
    samples: list[float] = []
    try:
        while not stop.is_set():
            started = time.perf_counter()
            client.hget(f"market:{rng.choice(symbols)}", "price")
            samples.append(time.perf_counter() - started)
            time.sleep(0.005)
    except (redis_lib.RedisError, OSError):
        pass
    conn.send(samples)
    conn.close()


class RedisLoad:
    def __init__(self, settings: Settings, options, events: Events, stop: threading.Event, *, rt: Runtime):
        self.settings, self.options, self.events, self.stop = settings, options, events, stop
        self.rt = rt
        self.lock = threading.Lock()
        self.errors: list[str] = []

    def fill(self, client, maxmemory: int) -> int:
        """Cache keys until Redis evicts (or holds maxmemory); how many were written."""
        rng = random.Random(1)
        written = 0
        start_evicted = int(client.info("stats")["evicted_keys"])
        deadline = time.monotonic() + max(10.0, self.options.seconds / 2)
        while not self.stop.is_set() and time.monotonic() < deadline:
            pipe = client.pipeline(transaction=False)
            for _ in range(200):
                pipe.set(f"{LOAD_CACHE}{written}", rng.randbytes(rng.choice((512, 2048, 4096, 8192))), ex=3600)
                written += 1
            pipe.execute()
            info = client.info("memory")
            if int(client.info("stats")["evicted_keys"]) > start_evicted or (
                maxmemory and info["used_memory"] >= maxmemory
            ):
                break
            self.events(Event(Status.WORKING, f"filling: {info['used_memory'] // 2**20}MB", "redis"))
        return written

    def cleanup(self, client) -> None:
        """The load's own cache keys go; the backend's keys it made Redis evict cannot come back."""
        pipe = client.pipeline(transaction=False)
        n = 0
        for key in client.scan_iter(match=LOAD_CACHE + "*", count=1000):
            pipe.unlink(key)
            n += 1
            if n % 1000 == 0:
                pipe.execute()
        pipe.execute()
        try:  # the allocator's pages the fill and its evictions dirtied go back to the OS (jemalloc builds)
            client.execute_command("MEMORY", "PURGE")
        except Exception:  # noqa: BLE001 - another allocator, or a server without the command: nothing to give back
            pass

    def writer(self, symbols: list[str]) -> None:
        import redis as redis_lib

        from qbctl.db.connect import redis_client

        client = redis_client(self.settings, timeout=5, rt=self.rt)
        cap = self.settings.values.max_candles_per_symbol
        rng = random.Random(2)
        n = 0
        batch = 100
        interval = batch / max(1, self.options.redis_rate)
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                pipe = client.pipeline(transaction=False)
                for _ in range(batch):
                    sym = rng.choice(symbols)
                    family = n % 10
                    if family < 3:
                        pipe.hset(
                            f"market:{sym}",
                            mapping={"price": rng.randrange(1000, 500000), "volume": n, "time": time.time()},
                        )
                    elif family < 5:
                        key = f"candles:{sym}:1m"
                        pipe.lpush(key, f'{{"t":{time.time():.0f},"o":1,"h":2,"l":0,"c":1,"v":{n}}}')
                        pipe.ltrim(key, 0, cap - 1)
                    elif family < 6:
                        pipe.hset(f"indicators:{sym}", mapping={"rsi_14": rng.random() * 100, "time": time.time()})
                    elif family < 8:
                        pipe.publish("events:market", f'{{"symbol":"{sym}","n":{n}}}')
                    else:
                        pipe.set(f"{LOAD_CACHE}{n}", rng.randbytes(rng.choice((512, 2048, 4096))), ex=600)
                    n += 1
                pipe.execute()
                rest = interval - (time.monotonic() - started)
                if rest > 0:
                    time.sleep(rest)
        except (redis_lib.RedisError, OSError) as exc:
            self.error(f"writer: {exc}")
        finally:
            client.close()

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text[:200])

    def subscriber(self, channel: str, counts: dict[str, int]) -> None:
        """Counts evicted keys by family (keyspace notifications), and reads the backend's events."""
        import redis as redis_lib

        from qbctl.checks.model import family_of
        from qbctl.db.connect import redis_client

        client = redis_client(self.settings, timeout=1, rt=self.rt)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(channel, "events:market")
            while not self.stop.is_set():
                msg = pubsub.get_message(timeout=0.2)
                if msg and msg["channel"] in (channel.encode(), channel):
                    key = msg["data"].decode() if isinstance(msg["data"], bytes) else msg["data"]
                    fam = family_of(key)
                    counts[fam] = counts.get(fam, 0) + 1
                elif msg:
                    counts["_events_received"] = counts.get("_events_received", 0) + 1
        except (redis_lib.RedisError, OSError) as exc:
            self.error(f"subscriber: {exc}")
        finally:
            pubsub.close()
            client.close()

    def probe(self, symbols: list[str], samples: list[float]) -> None:
        """GET latency, timed in a process of its own: in this one, the load's threads would hold the
        GIL and their waits would be counted as Redis's."""
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        stop = ctx.Event()
        proc = ctx.Process(target=probe_redis, args=(self.settings, symbols[:200], stop, child), daemon=True)
        proc.start()
        child.close()
        self.stop.wait()
        stop.set()
        try:
            if parent.poll(10):
                samples.extend(parent.recv())
        except (EOFError, OSError):
            self.error("probe: no timings came back")
        proc.join(5)
