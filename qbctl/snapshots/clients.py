"""PostgreSQL's and Redis's own tools, run inside their containers through the engine.

pg_dump, pg_restore and psql of the image itself: no local client of the right version is
needed, and a dump is always read by the server's own major. The container's local socket
trusts its users (as the official image sets it up), so no password is ever passed.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from qbctl.db.connect import Rows, dbname
from qbctl.engine.facade import Engine, ExecResult
from qbctl.errors import CheckFailed, Unavailable
from qbctl.snapshots import inventory

FIELD, RECORD, NULL = "\x1f", "\x1e", "\x1d"  # psql's separators: names come hex-encoded (see rows)
PGDATA = "/var/lib/postgresql/data"


def _tail(text: str, lines: int = 3) -> str:
    kept = [
        ln
        for ln in text.strip().splitlines()
        if ln.strip() and "warning:" not in ln and "detail:" not in ln and "hint:" not in ln
    ]
    return " / ".join(kept[-lines:])[:400] or text.strip()[-300:]


class Postgres:
    """psql, pg_dump and pg_restore in a running postgres container, as the stack's user."""

    def __init__(self, eng: Engine, container_id: str, user: str, name: str = "postgres") -> None:
        self.eng, self.cid, self.user, self.name = eng, container_id, user, name
        self._server: tuple[int, str, str | None, list[str]] | None = None

    def psql(self, db: str, sql: str, what: str = "") -> str:
        """Run SQL (one or more statements, one transaction); stdout, or CheckFailed with the server's words."""
        r = self.eng.exec_run(
            self.cid,
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", self.user, "-d", dbname(db), "-c", sql],
            env={"PGOPTIONS": inventory.PGOPTIONS},
        )
        if r.exit_code != 0:
            raise CheckFailed(f"{self.name}: {what or 'SQL'} failed: {_tail(r.stderr)}", code="SQL_FAILED")
        return r.stdout.decode("utf-8", "replace")

    def script(self, db: str, source: Iterable[bytes], what: str) -> None:
        """Run an SQL script fed on stdin (psql -f -), stopping at the first error."""
        r = self.eng.exec_run(
            self.cid,
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", self.user, "-d", dbname(db), "-f", "-"],
            source=source,
        )
        if r.exit_code != 0:
            raise CheckFailed(f"{self.name}: {what} failed: {_tail(r.stderr)}", code="SQL_FAILED")

    def rows(self, db: str) -> Rows:
        """`rows(sql)` over psql in the container (text values, NULL as None), in a reading session
        (inventory.READ_SETTINGS: search_path is pg_catalog). A value that may hold any character (a
        name) must come hex-encoded (inventory.hex_text): psql's separators are valid in it."""

        def run(sql: str) -> list[tuple]:
            r = self.eng.exec_run(
                self.cid,
                [
                    "psql",
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-F",
                    FIELD,
                    "-R",
                    RECORD,
                    "-P",
                    f"null={NULL}",
                    "-U",
                    self.user,
                    "-d",
                    dbname(db),
                    "-c",
                    sql,
                ],
                env={"PGOPTIONS": inventory.READ_PGOPTIONS},
            )
            if r.exit_code != 0:
                raise CheckFailed(f"{self.name}: reading {db} failed: {_tail(r.stderr)}", code="SQL_FAILED")
            text = r.stdout.decode("utf-8").rstrip("\n")
            if not text:
                return []
            return [tuple(None if v == NULL else v for v in rec.split(FIELD)) for rec in text.split(RECORD)]

        return run

    def _facts(self) -> tuple[int, str, str | None, list[str]]:
        """What the server is and offers, asked once per server."""
        if self._server is None:
            num, version, tsdb, offered = self.rows("postgres")(
                "SELECT current_setting('server_version_num'), current_setting('server_version'),"
                " (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),"
                " (SELECT string_agg(version, ',') FROM pg_available_extension_versions"
                "  WHERE name = 'timescaledb')"
            )[0]
            self._server = int(num) // 10000, version, tsdb, (offered or "").split(",") if offered else []
        return self._server

    def server(self) -> tuple[int, str, str | None]:
        """(major, version, TimescaleDB default version the image offers or None)."""
        return self._facts()[:3]

    def timescaledb_versions(self) -> list[str]:
        return self._facts()[3]

    def databases(self) -> list[str]:
        return [
            inventory.unhex(d)
            for (d,) in self.rows("postgres")(
                f"SELECT {inventory.hex_text('datname')} FROM pg_database WHERE NOT datistemplate ORDER BY datname"
            )
        ]

    def dump(self, db: str, sink: Callable[[bytes], None], snapshot: str | None = None) -> ExecResult:
        cmd = ["pg_dump", "-U", self.user, "-d", dbname(db), "--format=custom", "--compress=6"]
        if snapshot:
            cmd.append(f"--snapshot={snapshot}")
        r = self.eng.exec_run(self.cid, cmd, sink=sink)
        if r.exit_code != 0:
            raise CheckFailed(f"{self.name}: pg_dump of {db} failed: {_tail(r.stderr)}", code="SNAPSHOT_FAILED")
        return r

    def copy_database(self, source: str, target: str, application_name: str) -> None:
        """pg_dump of `source` piped into pg_restore of `target`, inside the container: no byte leaves
        it (and none crosses an ssh tunnel). Uncompressed: the stream is read at once. pg_dump's session
        is named `application_name`, so that an interrupted copy's dump can be ended by name."""
        script = (
            'st=$(mktemp); { PGAPPNAME="$QB_APP" pg_dump -U "$QB_USER" -d "$QB_SOURCE" --format=custom '
            '--compress=0; echo $? > "$st"; } | pg_restore -U "$QB_USER" -d "$QB_TARGET" --exit-on-error; '
            'r=$?; d=$(cat "$st"); rm -f "$st"; [ "$d" = 0 ] || exit 90; exit $r'
        )
        r = self.eng.exec_run(
            self.cid,
            ["sh", "-c", script],
            env={
                "QB_APP": application_name,
                "QB_USER": self.user,
                "QB_SOURCE": dbname(source),
                "QB_TARGET": dbname(target),
            },
        )
        if r.exit_code != 0:
            tool = "pg_dump" if r.exit_code == 90 else "pg_restore"
            raise CheckFailed(
                f"{self.name}: copying {source} into {target} failed ({tool}): {_tail(r.stderr)}", code="RESTORE_FAILED"
            )

    def basebackup(self, sink: Callable[[bytes], None], application_name: str | None = None) -> ExecResult:
        """The whole data directory as one tar stream (pg_basebackup, WAL included, fast checkpoint);
        its session named `application_name` (so that an interrupted one can be ended by name)."""
        r = self.eng.exec_run(
            self.cid,
            [
                "pg_basebackup",
                "-U",
                self.user,
                "-D",
                "-",
                "--format=tar",
                "--wal-method=fetch",
                "--checkpoint=fast",
                "--no-manifest",
            ],
            sink=sink,
            env={"PGAPPNAME": application_name} if application_name else None,
        )
        if r.exit_code != 0:
            raise CheckFailed(f"{self.name}: pg_basebackup failed: {_tail(r.stderr)}", code="SNAPSHOT_FAILED")
        return r

    def xact_snapshot(self) -> str:
        """pg_current_snapshot() of a new session: xmin:xmax:in-progress."""
        return self.rows("postgres")("SELECT pg_current_snapshot()::text")[0][0]

    def committed_since(self, snapshot: str, limit: int = 100_000) -> bool:
        """Whether any transaction committed after `snapshot` (a pg_current_snapshot() text) was taken:
        one in progress then, or one that began since. Conservative: too many to check counts as yes."""
        _, xmax, xip = snapshot.split(":")
        now = int(self.xact_snapshot().split(":")[1])
        if now - int(xmax) > limit:
            return True
        ((count,),) = self.rows("postgres")(
            f"SELECT count(*)::text FROM (SELECT unnest('{{{xip}}}'::xid8[]) AS x UNION ALL"
            f" SELECT g::text::xid8 FROM generate_series({int(xmax)}::bigint, {now - 1}::bigint) g) t"
            " WHERE pg_xact_status(x) = 'committed'"
        )
        return int(count) > 0

    def dump_globals(self, sink: Callable[[bytes], None]) -> None:
        r = self.eng.exec_run(self.cid, ["pg_dumpall", "-U", self.user, "--globals-only"], sink=sink)
        if r.exit_code != 0:
            raise CheckFailed(
                f"{self.name}: pg_dumpall --globals-only failed: {_tail(r.stderr)}", code="SNAPSHOT_FAILED"
            )

    def toc(self, source: Iterable[bytes]) -> ExecResult:
        """pg_restore --list of a dump: whether this server's pg_restore can read it."""
        return self.eng.exec_run(self.cid, ["pg_restore", "--list"], source=source)

    def restore(self, db: str, source: Iterable[bytes]) -> None:
        r = self.eng.exec_run(
            self.cid, ["pg_restore", "-U", self.user, "-d", dbname(db), "--exit-on-error"], source=source
        )
        if r.exit_code != 0:
            raise CheckFailed(f"{self.name}: pg_restore into {db} failed: {_tail(r.stderr)}", code="RESTORE_FAILED")

    def free_bytes(self, path: str = PGDATA) -> int | None:
        r = self.eng.exec_run(self.cid, ["df", "-Pk", path])
        try:
            return int(r.stdout.decode().splitlines()[1].split()[3]) * 1024
        except (IndexError, ValueError):
            return None

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the server accepts connections on its socket; its last log lines when it stops instead."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.eng.state(self.cid)
            if state.status in ("exited", "dead"):
                logs = self.eng.tail_logs(self.cid, 5)
                raise Unavailable(
                    f"{self.name} stopped while starting (exit {state.exit_code}): " + " / ".join(logs)[-400:],
                    code="START_FAILED",
                )
            # Over TCP inside the container: the entrypoint's first-start server listens on its socket only,
            # so this answers once the real server is up.
            r = self.eng.exec_run(self.cid, ["pg_isready", "-q", "-h", "127.0.0.1", "-U", self.user, "-d", "postgres"])
            if r.exit_code == 0:
                return
            if time.monotonic() > deadline:
                raise Unavailable(f"{self.name} did not accept connections within {timeout:.0f}s", code="NOT_READY")
            time.sleep(0.1)


class Redis:
    """redis-cli in the running redis container (REDISCLI_AUTH is in its environment when set)."""

    def __init__(self, eng: Engine, container_id: str) -> None:
        self.eng, self.cid = eng, container_id

    def cli(self, *args: str) -> str:
        r = self.eng.exec_run(self.cid, ["redis-cli", *args])
        text = r.stdout.decode("utf-8", "replace")
        if r.exit_code != 0 or text.startswith(("ERR", "NOAUTH", "WRONGPASS")):
            raise CheckFailed(
                f"redis: redis-cli {' '.join(args)}: {(text + r.stderr).strip()[:300]}", code="REDIS_FAILED"
            )
        return text

    def info(self) -> dict[str, str]:
        out = {}
        for line in self.cli("info").splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.strip().split(":", 1)
                out[k] = v
        return out

    def keyspace(self) -> dict[str, int]:
        """Keys per database: {"db0": 150}."""
        return {
            k: int(v.split(",")[0].split("=")[1])
            for k, v in self.info().items()
            if k.startswith("db") and k[2:].isdigit()
        }

    def dump(self, sink: Callable[[bytes], None], timeout: float = 300) -> None:
        """The whole dataset as an RDB file: BGSAVE (a fork: a consistent dataset), then the file it wrote,
        through the engine's archive API. (`redis-cli --rdb` waits repl-diskless-sync-delay, 5 s by
        default, before every transfer.)"""
        before = self.info()
        saves = int(before.get("rdb_saves", -1))
        self.cli("bgsave", "schedule")  # after a save already under way, if any
        deadline = time.monotonic() + timeout
        while True:
            now = self.info()
            done = (
                int(now.get("rdb_saves", -1)) > saves
                if saves >= 0
                else now.get("rdb_last_save_time") != before.get("rdb_last_save_time")
            )
            if done and now.get("rdb_bgsave_in_progress") == "0":
                break
            if time.monotonic() > deadline:
                raise CheckFailed(f"redis: BGSAVE did not finish within {timeout:.0f}s", code="SNAPSHOT_FAILED")
            time.sleep(0.02)
        if now.get("rdb_last_bgsave_status") != "ok":
            raise CheckFailed(
                "redis: BGSAVE failed (`qbctl logs redis` says why: often the disk of its volume)",
                code="SNAPSHOT_FAILED",
            )
        folder = self.cli("config", "get", "dir").split("\n")[1].strip()
        name = self.cli("config", "get", "dbfilename").split("\n")[1].strip()
        chunks = self.eng.get_file(self.cid, f"{folder}/{name}")
        if chunks is None:
            raise CheckFailed(f"redis: {folder}/{name} is not there after BGSAVE", code="SNAPSHOT_FAILED")
        for chunk in chunks:
            sink(chunk)

    def wait_ready(self, timeout: float = 60) -> None:
        """Until PING answers PONG (not LOADING)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.eng.state(self.cid)
            if state.status in ("exited", "dead"):
                raise Unavailable(
                    f"redis stopped while starting (exit {state.exit_code}): "
                    + " / ".join(self.eng.tail_logs(self.cid, 5))[-400:],
                    code="START_FAILED",
                )
            r = self.eng.exec_run(self.cid, ["redis-cli", "ping"])
            if r.stdout.strip() == b"PONG":
                return
            if time.monotonic() > deadline:
                raise Unavailable(f"redis did not answer PING within {timeout:.0f}s", code="NOT_READY")
            time.sleep(0.05)
