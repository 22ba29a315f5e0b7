"""Redis logical databases of their own for tests (the Redis half of the pytest plugin).

Redis has no CREATE DATABASE: a server has a fixed number of logical databases (16 by default),
so a session claims one that is free, empties it, and gives it back empty.

- **Who holds one**: the claimant keeps a connection SELECTed into it, named
  `qbctl-testdb-<key>-held` once its claim stands (the session's random key; its other connections
  are `qbctl-testdb-<key>...` too): CLIENT LIST says at any time which sessions are alive, and
  which holds what even when a record is lost (REDIS_URL's database flushed by a test).
- **Its label**: a record `qbctl:testdb:<index>` (JSON: the key, host, pid, time) in REDIS_URL's
  own database, written with SET NX, so two sessions never claim one index at once. A database
  is only ever flushed while its record names a session: one that holds it now, or a dead one (a
  killed run's leftover, flushed and freed by the next session). A database without a record
  that holds keys is somebody else's: never touched.
- **Which**: from the highest index down, never REDIS_URL's own (the backend's data lives there).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from typing import TYPE_CHECKING

from qbctl.config.settings import Settings
from qbctl.db import connect
from qbctl.errors import Unavailable

if TYPE_CHECKING:
    from redis import Redis

    from qbctl.engine.runtime import Runtime

RECORD = "qbctl:testdb:{index}"
CLIENT_NAME = "qbctl-testdb-{owner}"
HELD = "-held"  # the suffix of a holder whose claim stands


def with_db(settings: Settings, index: int) -> Settings:
    redis = dataclasses.replace(settings.redis, db=index)
    return dataclasses.replace(settings, values=dataclasses.replace(settings.values, redis_url=redis))


def url(settings: Settings, index: int, *, rt: Runtime) -> str:
    """REDIS_URL with another database index, with the host and port this process reaches (through `rt`'s reach)."""
    from urllib.parse import quote

    rd = settings.redis
    host, port = rt.reach.endpoint(rd.host, rd.port, settings.values.qbctl_bind_address)
    auth = ""
    if rd.username or rd.password:
        auth = quote(rd.username, safe="") + (":" + quote(rd.password, safe="") if rd.password else "") + "@"
    return f"redis://{auth}{host}:{port}/{index}"


def candidates(databases: int, own: int) -> list[int]:
    """The indexes a session may claim, highest first, REDIS_URL's own left out. Pure."""
    return [i for i in range(databases - 1, -1, -1) if i != own]


def alive(client_list: list[dict]) -> set[str]:
    """The session keys of the claimants that are connected now. Pure."""
    prefix = CLIENT_NAME.format(owner="")
    return {c["name"][len(prefix) :][:16] for c in client_list if c.get("name", "").startswith(prefix)}


def held_elsewhere(client_list: list[dict], index: int, owner: str) -> bool:
    """Whether another session's claim on `index` stands (its holder is connected there). Pure."""
    prefix, mine = CLIENT_NAME.format(owner=""), CLIENT_NAME.format(owner=owner)
    return any(
        c.get("name", "").startswith(prefix)
        and c["name"].endswith(HELD)
        and not c["name"].startswith(mine)
        and str(c.get("db")) == str(index)
        for c in client_list
    )


class RedisSession:
    """One pytest session's (or xdist worker's) claims on the Redis server of REDIS_URL."""

    def __init__(self, settings: Settings, owner: str, *, rt: Runtime):
        self.settings, self.owner = settings, owner
        self.rt = rt  # the pytest plugin's: how this process reaches the server
        self.control: Redis | None = None  # REDIS_URL's own database: the records (open to close)
        self.held: dict[int, Redis] = {}  # index -> its holding connection
        self.databases = 16

    def open(self) -> list[int]:
        """Connect, and free what killed runs left (their records' sessions are gone); those indexes."""
        import redis

        self.control = connect.redis_client(self.settings, name=CLIENT_NAME.format(owner=self.owner), rt=self.rt)
        try:
            try:
                found = self._control().config_get("databases").get("databases")
                self.databases = int(found) if found is not None else 16
            except redis.ResponseError:  # CONFIG disabled (a managed Redis): the default
                self.databases = 16
            return self.sweep()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.close()
            raise Unavailable(
                connect.redis_error(exc, self.settings),
                code="REDIS_UNAVAILABLE",
                hint="`qbctl up` starts the stack's Redis; or point REDIS_URL at a running server",
            ) from None

    def _control(self) -> Redis:
        if self.control is None:
            raise RuntimeError("RedisSession.open() first")
        return self.control

    def close(self) -> None:
        for index in list(self.held):
            self.release(index)
        if self.control is not None:
            self.control.close()
            self.control = None

    def _records(self) -> dict[int, dict]:
        out = {}
        raws = self._control().mget([RECORD.format(index=index) for index in range(self.databases)])
        for index, raw in enumerate(raws):
            if raw:
                try:
                    out[index] = json.loads(raw)
                except ValueError:
                    continue  # not a record of ours: left alone
        return out

    def sweep(self) -> list[int]:
        live = alive(self._control().client_list())
        freed = []
        for index, record in self._records().items():
            if record.get("owner") not in live and self._take_over(index, record):
                self._client(index).flushdb()
                self._control().delete(RECORD.format(index=index))
                freed.append(index)
        return freed

    def _record(self) -> str:
        return json.dumps(
            {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(), "created": round(time.time(), 3)}
        )

    def _take_over(self, index: int, old: dict) -> bool:
        """The record of a dead session replaced by ours, atomically (another sweep may race us)."""
        import redis

        key = RECORD.format(index=index)
        with self._control().pipeline() as pipe:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                if not raw or json.loads(raw).get("owner") != old.get("owner"):
                    return False
                pipe.multi()
                pipe.set(key, self._record())
                pipe.execute()
                return True
            except (redis.WatchError, ValueError):
                return False

    def _client(self, index: int) -> Redis:
        return connect.redis_client(
            with_db(self.settings, index), name=CLIENT_NAME.format(owner=self.owner) + "-db", rt=self.rt
        )

    def claim(self) -> int:
        """A free database index, empty, held by this session until `release`."""
        clients = self._control().client_list()
        live = alive(clients)
        records = self._records()
        for index in candidates(self.databases, self.settings.redis.db):
            if index in self.held:
                continue
            record = records.get(index)
            if (record is not None and record.get("owner") in live) or held_elsewhere(clients, index, self.owner):
                continue
            holder = self._client(index)
            if record is not None:
                ok = self._take_over(index, record)  # a killed run's: its keys are flushed below
            else:
                ok = holder.dbsize() == 0 and bool(
                    self._control().set(RECORD.format(index=index), self._record(), nx=True)
                )
                # Keys written meanwhile are not ours; a holder whose record was lost holds it still.
                if ok and (holder.dbsize() != 0 or held_elsewhere(self._control().client_list(), index, self.owner)):
                    self._drop_record(index)
                    ok = False
            if not ok:
                holder.close()
                continue
            holder.client_setname(CLIENT_NAME.format(owner=self.owner) + HELD)
            holder.flushdb()  # a killed run's keys, or nothing
            self.held[index] = holder
            return index
        raise Unavailable(
            f"no free Redis database on {self.settings.redis.masked()}: its {self.databases} are "
            "REDIS_URL's own, held by other test sessions, or hold keys qbctl did not write",
            code="NO_FREE_REDIS_DATABASE",
            hint="each test session (each xdist worker) takes one for qb_redis_url and one for "
            "qb_session_redis_url: run fewer workers, or raise `databases` in the server's "
            "configuration",
        )

    def _drop_record(self, index: int) -> None:
        key = RECORD.format(index=index)
        raw = self._control().get(key)
        if raw and json.loads(raw).get("owner") == self.owner:
            self._control().delete(key)

    def flush(self, index: int) -> None:
        self.held[index].flushdb()

    def release(self, index: int) -> None:
        holder = self.held.pop(index)
        try:
            holder.flushdb()
            self._drop_record(index)
        finally:
            holder.close()
