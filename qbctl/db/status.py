"""qbctl db status: migrations (applied / pending / changed), hypertables and their jobs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from qbctl.config.settings import Settings
from qbctl.db import connect, files, migrate, timescale
from qbctl.errors import CheckFailed, QbctlError
from qbctl.result import Result

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime

# {ts}: TimescaleDB's schema (timescale.extension_schema), so that the user's search_path cannot hide it.
HYPERTABLES_SQL = """
SELECT h.hypertable_name, h.num_chunks, h.compression_enabled,
       {ts}.hypertable_size(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass),
       s.before_compression_total_bytes, s.after_compression_total_bytes, s.number_compressed_chunks
FROM timescaledb_information.hypertables h
LEFT JOIN LATERAL {ts}.hypertable_compression_stats(format('%I.%I', h.hypertable_schema, h.hypertable_name)
                                                    ::regclass) s ON true
ORDER BY h.hypertable_name
"""


@dataclass
class DbStatus(Result):
    database: str
    timescaledb: str | None
    migrations: list[dict]
    hypertables: list[dict] = field(default_factory=list)
    jobs: list[dict] = field(default_factory=list)
    timescaledb_available: str | None = None  # the version the image offers (`qbctl upgrade` updates to it)
    ok: bool = True
    error: QbctlError | None = None


def status(settings: Settings, *, pending_is_failure: bool = False, rt: Runtime) -> DbStatus:
    local = files.load(settings)
    with connect.connect(settings, rt=rt) as conn:
        rows = connect.psycopg_rows(conn)
        state = migrate.read_state(rows)
        version = state.timescaledb
        items = migrate.plan(
            local, migrate.read_applied(rows, state), timescaledb=bool(state.timescaledb or state.available)
        )
        result = DbStatus(
            settings.pg.masked(), version, [asdict(i) for i in items], timescaledb_available=state.available
        )
        if version:
            for r in conn.execute(HYPERTABLES_SQL.replace("{ts}", timescale.extension_schema(rows))):
                before, after = r[4], r[5]
                result.hypertables.append(
                    {
                        "name": r[0],
                        "chunks": r[1],
                        "compression": r[2],
                        "size_bytes": r[3],
                        "compressed_chunks": r[6] or 0,
                        "compression_ratio": round(before / after, 1) if before and after else None,
                    }
                )
            result.jobs = timescale.read_jobs(conn)
    changed = [i.file for i in items if i.state == "changed"]
    pending = [i.file for i in items if i.state in migrate.TODO]
    failed = [j for j in result.jobs if j["problem"]]
    if changed:
        result.fail(
            CheckFailed(
                f"{', '.join(changed)} changed after it was applied",
                code="MIGRATION_CHANGED",
                hint="see `qbctl db migrate`",
            )
        )
    elif pending and pending_is_failure:
        result.fail(
            CheckFailed(
                f"{len(pending)} pending: " + ", ".join(pending),
                code="PENDING_MIGRATIONS",
                hint="run `qbctl db migrate`",
            )
        )
    elif failed:
        result.fail(
            CheckFailed(
                f"{len(failed)} TimescaleDB job(s) failed their last run, are paused or do not run: "
                + ", ".join(f"{j['job_id']} ({j['problem']})" for j in failed),
                code="JOBS_FAILED",
                hint="the why column says why; timescaledb_information.job_errors has the errors of failed runs",
            )
        )
    return result
