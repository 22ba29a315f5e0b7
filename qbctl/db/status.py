"""qbctl db status: migrations (applied / pending / changed), hypertables and their jobs."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from qbctl.result import Result
from qbctl.db import migrate
from qbctl.db import connect as pg
from qbctl.db import files as sqlfiles
from qbctl.db import timescale
from qbctl.config.settings import Settings

HYPERTABLES_SQL = """
SELECT h.hypertable_name, h.num_chunks, h.compression_enabled,
       hypertable_size(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass),
       s.before_compression_total_bytes, s.after_compression_total_bytes, s.number_compressed_chunks
FROM timescaledb_information.hypertables h
LEFT JOIN LATERAL hypertable_compression_stats(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass) s
  ON true
ORDER BY h.hypertable_name
"""


@dataclass
class DbStatus(Result):
    database: str
    timescaledb: str | None
    migrations: list[dict]
    hypertables: list[dict] = field(default_factory=list)
    jobs: list[dict] = field(default_factory=list)
    ok: bool = True
    error: dict | None = None



def status(settings: Settings, pending_is_failure: bool = False) -> DbStatus:
    local = sqlfiles.load(settings)
    with pg.connect(settings) as conn:
        version = migrate.timescaledb_state(conn)[0]
        items = migrate.plan(local, migrate.read_applied(conn), timescaledb=True)
        result = DbStatus(settings.pg.masked(), version, [asdict(i) for i in items])
        if version:
            for r in conn.execute(HYPERTABLES_SQL):
                before, after = r[4], r[5]
                result.hypertables.append({
                    "name": r[0], "chunks": r[1], "compression": r[2], "size_bytes": r[3],
                    "compressed_chunks": r[6] or 0,
                    "compression_ratio": round(before / after, 1) if before and after else None})
            result.jobs = timescale.read_actual(conn).jobs
    changed = [i.file for i in items if i.state == "changed"]
    pending = [i.file for i in items if i.state in ("pending", "reapply")]
    failed = [j for j in result.jobs if j["last_run_status"] == "Failed"]
    if changed:
        result.ok, result.error = False, {"code": "MIGRATION_CHANGED", "message": f"{', '.join(changed)} changed "
                                          "after it was applied", "hint": "see `qbctl db migrate`"}
    elif pending and pending_is_failure:
        result.ok, result.error = False, {"code": "PENDING_MIGRATIONS", "message": f"{len(pending)} pending: "
                                          + ", ".join(pending), "hint": "run `qbctl db migrate`"}
    elif failed:
        result.ok, result.error = False, {"code": "JOBS_FAILED", "message": f"{len(failed)} TimescaleDB job(s) "
                                          "failed their last run", "hint": "timescaledb_information.job_errors "
                                          "has their errors"}
    return result
