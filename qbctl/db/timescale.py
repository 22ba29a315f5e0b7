"""Declared TimescaleDB state (read from the rendered sql/policies) against the database.

The declaration is read from the policy files themselves, so there is one source of
truth: the SQL that migrate applies. `diff` is pure and tested without a database.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from qbctl.config.settings import Settings
from qbctl.db import connect
from qbctl.db import files as sqlfiles
from qbctl.errors import CheckFailed, QbctlError, TimescaleMissing
from qbctl.result import Result

HYPERTABLE = re.compile(r"create_hypertable\(\s*'([\w.]+)'\s*,\s*by_range\(\s*'(\w+)'\s*(?:,\s*INTERVAL\s*'([^']+)')?",
                        re.I)
COMPRESS = re.compile(r"ALTER\s+TABLE\s+([\w.]+)\s+SET\s*\((.*?timescaledb\.compress.*?)\)\s*;", re.I | re.S)
SEGMENTBY = re.compile(r"compress_segmentby\s*=\s*'([^']*)'", re.I)
ORDERBY = re.compile(r"compress_orderby\s*=\s*'([^']*)'", re.I)
POLICY = re.compile(r"add_(compression|retention)_policy\(\s*'([\w.]+)'\s*,\s*(?:compress_after|drop_after)\s*=>\s*"
                    r"INTERVAL\s*'([^']+)'", re.I)
PROC = {"compression": "policy_compression", "retention": "policy_retention"}


@dataclass(frozen=True)
class Declared:
    hypertables: dict[str, tuple[str, str | None]]  # table -> (time column, chunk interval)
    compression: dict[str, tuple[str, str]]  # table -> (segmentby, orderby)
    policies: dict[tuple[str, str], str]  # (kind, table) -> interval


def declared(files: list[sqlfiles.SqlFile]) -> Declared:
    ht, comp, pol = {}, {}, {}
    for f in files:
        if f.kind != "policy":
            continue
        text = re.sub(r"--[^\n]*", "", f.text)  # comments do not declare anything
        for table, column, interval in HYPERTABLE.findall(text):
            ht[table] = (column, interval or None)
        for table, options in COMPRESS.findall(text):
            seg, order = SEGMENTBY.search(options), ORDERBY.search(options)
            comp[table] = (seg.group(1) if seg else "", order.group(1) if order else "")
        for kind, table, interval in POLICY.findall(text):
            pol[(kind.lower(), table)] = interval
    return Declared(ht, comp, pol)


@dataclass(frozen=True)
class Actual:
    hypertables: dict[str, tuple[str, str]]
    compression: dict[str, tuple[str, str]]
    jobs: list[dict]  # {job_id, kind, table, interval, scheduled, last_run_status, total_failures}


def _norm_list(text: str) -> str:
    return ",".join(p.strip().replace('"', "").lower() for p in (text or "").split(",") if p.strip())


def _norm_order(text: str) -> str:
    parts = []
    for p in (text or "").split(","):
        p = p.strip().replace('"', "").lower()
        if p:
            p = re.sub(r"\s+nulls\s+first$", "", p) if p.endswith("desc nulls first") else p
            p = re.sub(r"\s+asc$", "", p)
            parts.append(" ".join(p.split()))
    return ",".join(parts)


@dataclass(frozen=True)
class Drift:
    item: str
    problem: str  # missing | different | extra | failed | paused
    declared: str | None = None
    actual: str | None = None


def diff(decl: Declared, actual: Actual, same_interval) -> list[Drift]:
    """Every difference between declared and actual state. same_interval(a, b) compares intervals."""
    out: list[Drift] = []
    for table, (column, interval) in decl.hypertables.items():
        have = actual.hypertables.get(table)
        if have is None:
            out.append(Drift(f"hypertable {table}", "missing", f"{column} / {interval}"))
            continue
        if have[0] != column or (interval and not same_interval(interval, have[1])):
            out.append(Drift(f"hypertable {table}", "different", f"{column} / {interval}", f"{have[0]} / {have[1]}"))
    for table in actual.hypertables.keys() - decl.hypertables.keys():
        out.append(Drift(f"hypertable {table}", "extra", None, actual.hypertables[table][0]))
    for table, (seg, order) in decl.compression.items():
        have = actual.compression.get(table)
        if have is None:
            out.append(Drift(f"compression {table}", "missing", f"segmentby {seg}, orderby {order}"))
        elif _norm_list(have[0]) != _norm_list(seg) or _norm_order(have[1]) != _norm_order(order):
            out.append(Drift(f"compression {table}", "different", f"segmentby {seg}, orderby {order}",
                             f"segmentby {have[0]}, orderby {have[1]}"))
    for table in actual.compression.keys() - decl.compression.keys():
        out.append(Drift(f"compression {table}", "extra", None, f"segmentby {actual.compression[table][0]}"))
    policy_jobs = [j for j in actual.jobs if j["kind"] in PROC]
    for (kind, table), interval in decl.policies.items():
        jobs = [j for j in policy_jobs if j["kind"] == kind and j["table"] == table]
        name = f"{kind} policy {table}"
        if not jobs:
            out.append(Drift(name, "missing", interval))
            continue
        for j in jobs[1:]:
            out.append(Drift(f"{name} (job {j['job_id']})", "extra", interval, j["interval"]))
        if not same_interval(interval, jobs[0]["interval"]):
            out.append(Drift(f"{name} (job {jobs[0]['job_id']})", "different", interval, jobs[0]["interval"]))
    for j in policy_jobs:
        if (j["kind"], j["table"]) not in decl.policies:
            out.append(Drift(f"{j['kind']} policy {j['table']} (job {j['job_id']})", "extra", None, j["interval"]))
    for j in actual.jobs:
        label = f"job {j['job_id']} ({j['kind']}{' on ' + j['table'] if j['table'] else ''})"
        if j.get("last_run_status") == "Failed":
            out.append(Drift(label, "failed", None, f"{j['total_failures']} failures"))
        if j["kind"] in PROC and not j["scheduled"]:
            out.append(Drift(label, "paused", "scheduled", "paused"))
    return out


JOBS_SQL = """
SELECT j.job_id, j.proc_name, j.hypertable_name, j.scheduled,
       COALESCE(j.config->>'compress_after', j.config->>'drop_after'),
       s.last_run_status, COALESCE(s.total_failures, 0), s.last_run_started_at::text, s.next_start::text
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.job_stats s USING (job_id)
WHERE j.proc_name <> 'policy_telemetry'
ORDER BY j.job_id
"""


def read_actual(conn) -> Actual:
    ht = {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT hypertable_name, column_name, time_interval::text FROM timescaledb_information.dimensions"
        " WHERE dimension_number = 1")}
    comp = {r[0]: (r[1] or "", r[2] or "") for r in conn.execute(
        "SELECT h.hypertable_name, s.segmentby, s.orderby FROM timescaledb_information.hypertables h"
        " JOIN timescaledb_information.hypertable_compression_settings s"
        " ON s.hypertable = format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass"
        " WHERE h.compression_enabled")}
    jobs = []
    for r in conn.execute(JOBS_SQL):
        kind = {v: k for k, v in PROC.items()}.get(r[1], r[1])
        jobs.append({"job_id": r[0], "kind": kind, "table": r[2], "scheduled": r[3], "interval": r[4],
                     "last_run_status": r[5], "total_failures": r[6],
                     "last_run": r[7], "next_start": r[8]})  # text: a running job's next_start is -infinity
    return Actual(ht, comp, jobs)


def interval_comparer(conn):
    def same(a: str | None, b: str | None) -> bool:
        if a is None or b is None:
            return a == b
        return bool(conn.execute("SELECT %s::interval = %s::interval", (a, b)).fetchone()[0])
    return same


@dataclass
class VerifyResult(Result):
    database: str
    timescaledb: str | None
    drift: list[dict] = field(default_factory=list)
    checked: int = 0
    ok: bool = True
    error: QbctlError | None = None



def verify(settings: Settings) -> VerifyResult:
    from qbctl.db.migrate import read_state

    decl = declared(sqlfiles.load(settings))
    with connect.connect(settings) as conn:
        version = read_state(connect.psycopg_rows(conn)).timescaledb
        if not version:
            raise TimescaleMissing(f"the timescaledb extension is not installed in {settings.pg.masked()}",
                                   hint="`qbctl db migrate` creates it (on a server that provides it)")
        drift = diff(decl, read_actual(conn), interval_comparer(conn))
    checked = len(decl.hypertables) + len(decl.compression) + len(decl.policies)
    result = VerifyResult(settings.pg.masked(), version, [asdict(d) for d in drift], checked, not drift)
    if drift:
        result.fail(CheckFailed(f"{len(drift)} difference(s) between sql/policies and the database", code="DRIFT",
                                hint="`qbctl db migrate` re-applies the policies; a failed job's error is in "
                                     "timescaledb_information.job_errors"))
    return result
