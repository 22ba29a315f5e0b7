"""Declared TimescaleDB state (read from the migration files) against the database, and the jobs.

The declaration is read from the files themselves, so there is one source of truth: the SQL
that migrate applies. Schema files are replayed in order, then the rendered policy files: a
hypertable, a continuous aggregate, a compression setting or a policy that one file adds and a
later one removes or drops is not declared. `diff` is pure and tested without a database.

A job is judged by what its statistics say (`job_state`): failed, paused, running, waiting for
its next start, or not running at all: never run, or overdue, long after it was due (no
scheduler for the database, or one that cannot start it: out of background workers).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from qbctl.config.settings import Settings
from qbctl.db import connect
from qbctl.db import files as sqlfiles
from qbctl.errors import CheckFailed, QbctlError, TimescaleMissing
from qbctl.result import Result

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime

PROC = {
    "compression": "policy_compression",
    "retention": "policy_retention",
    "refresh": "policy_refresh_continuous_aggregate",
}
KIND = {v: k for k, v in PROC.items()}
JOB_GRACE_SECONDS = 60  # how long after it was due (or after the server or the last migrate) a job may wait


@dataclass(frozen=True)
class Declared:
    hypertables: dict[str, tuple[str, str | None]]  # table -> (time column, chunk interval)
    compression: dict[str, tuple[str | None, str | None]]  # table or cagg -> (segmentby, orderby); None: any
    policies: dict[tuple[str, str], str]  # (compression | retention, table or cagg) -> interval
    caggs: dict[str, str] = field(default_factory=dict)  # continuous aggregate -> the hypertable it reads
    refresh: dict[str, tuple[str | None, str | None, str | None]] = field(default_factory=dict)
    # cagg -> (start_offset, end_offset, schedule_interval); None: NULL (unbounded), or not given for the schedule

    @property
    def count(self) -> int:
        return len(self.hypertables) + len(self.compression) + len(self.policies) + len(self.caggs) + len(self.refresh)


# --- reading the declaration ---------------------------------------------------------------------
CALL = re.compile(
    r"\b(create_hypertable|set_chunk_time_interval|add_(?:compression|columnstore|retention)_policy|"
    r"remove_(?:compression|columnstore|retention)_policy|add_continuous_aggregate_policy|"
    r"remove_continuous_aggregate_policy)\s*\(",
    re.I,
)
# A relation's name as SQL writes it: parts plain or double-quoted (any character, "" for a quote), joined by dots.
IDENT = r'(?:"(?:[^"]|"")*"|[^\s"(),;.]+)'
QUALIFIED = rf"{IDENT}(?:\s*\.\s*{IDENT})*"
ALTER_SET = re.compile(
    rf"^ALTER\s+(TABLE|MATERIALIZED\s+VIEW)\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?({QUALIFIED})"
    r"\s+SET\s*\(",
    re.I,
)
CREATE_TABLE = re.compile(rf"^CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?({QUALIFIED})\s*\(", re.I)
CREATE_CAGG = re.compile(
    rf"^CREATE\s+MATERIALIZED\s+VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?({QUALIFIED})\s*(?:\(|WITH\b)", re.I
)
FROM = re.compile(rf"\bFROM\s+({QUALIFIED})", re.I)
DROP = re.compile(
    r"^DROP\s+(TABLE|MATERIALIZED\s+VIEW)\s+(?:IF\s+EXISTS\s+)?(.+?)(?:\s+(?:CASCADE|RESTRICT))?$", re.I | re.S
)
QUOTED = re.compile(r"^(?:INTERVAL\s*)?'((?:[^']|'')*)'(?:\s*::\s*\w+)?$", re.I)


def _split_args(text: str, start: int) -> tuple[list[str], int]:
    """The top-level, comma-separated arguments of the call whose '(' is at text[start - 1]."""
    args, depth, i, begin, quote = [], 0, start, start, None
    while i < len(text):
        c = text[i]
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                args.append(text[begin:i].strip())
                return [a for a in args if a], i + 1
            depth -= 1
        elif c == "," and depth == 0:
            args.append(text[begin:i].strip())
            begin = i + 1
        i += 1
    args.append(text[begin:].strip())
    return [a for a in args if a], len(text)


def _inside(text: str, start: int) -> str:
    """The text between the '(' at text[start - 1] and its closing parenthesis."""
    return text[start : _split_args(text, start)[1] - 1]


def _call_args(text: str, start: int) -> tuple[list[str], dict[str, str]]:
    """(positional, named) arguments of a call; `name => value` is named."""
    pos, named = [], {}
    for a in _split_args(text, start)[0]:
        m = re.match(r"^(\w+)\s*=>\s*(.+)$", a, re.S)
        if m:
            named[m.group(1).lower()] = m.group(2).strip()
        else:
            pos.append(a)
    return pos, named


def _value(raw: str | None) -> str | None:
    """A literal as the text it holds: INTERVAL '1 day' and '1 day'::interval are '1 day'; NULL is None."""
    if raw is None:
        return None
    raw = raw.strip()
    if raw.upper() == "NULL":
        return None
    m = QUOTED.match(raw)
    return m.group(1).replace("''", "'") if m else raw


def _name(raw: str | None) -> str:
    """A relation named as a literal or an identifier, without its schema or quotes (as the views name it)."""
    parts = re.findall(IDENT, _value(raw) or "")
    if not parts:
        return ""
    name = parts[-1]
    return name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()


def _arg(pos: list[str], named: dict[str, str], index: int, *names: str) -> str | None:
    for n in names:
        if n in named:
            return named[n]
    return pos[index] if len(pos) > index else None


def _options(body: str) -> dict[str, str | None]:
    """`a.b = 'x', c` (the inside of WITH (...) or SET (...)) as {'b': 'x', 'c': None}, prefixes dropped."""
    out = {}
    for opt in _split_args(body + ")", 0)[0]:
        key, _, value = opt.partition("=")
        out[key.strip().lower().split(".")[-1]] = _value(value) if value.strip() else None
    return out


def _false(value: str | None) -> bool:
    return (value or "").strip().lower() in ("false", "off", "0", "no")


def declared(files: list[sqlfiles.SqlFile]) -> Declared:
    d = Declared({}, {}, {})
    for f in files:  # schema files, then policies: the order migrate applies them
        for st in f.statements:
            _declare(d, st.canonical)
    return d


def _declare(d: Declared, text: str) -> None:
    """What one statement declares or takes back."""
    m = DROP.match(text)
    if m:
        for name in (_name(n) for n in _split_args(m.group(2) + ")", 0)[0]):
            _forget(d, name)
        return
    _declare_cagg(d, text)
    _declare_table(d, text)
    _declare_compression(d, text)
    for call in CALL.finditer(text):
        pos, named = _call_args(text, call.end())
        _declare_call(d, call.group(1).lower(), pos, named)


def _declare_cagg(d: Declared, text: str) -> None:
    """CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous): the view and its source table."""
    m = CREATE_CAGG.match(text)
    if m and re.search(r"\b(?:timescaledb|tsdb)\s*\.\s*continuous\b", text, re.I):
        flat = text[m.end() :]
        while True:  # parenthesised parts blanked: the FROM of EXTRACT(EPOCH FROM time) is not the source
            blanked = re.sub(r"\([^()]*\)", "", flat)
            if blanked == flat:
                break
            flat = blanked
        source = FROM.search(flat)
        d.caggs[_name(m.group(1))] = _name(source.group(1)) if source else ""


def _declare_table(d: Declared, text: str) -> None:
    """CREATE TABLE ... (columns) WITH (timescaledb.hypertable, timescaledb.partition_column = 'time')."""
    m = CREATE_TABLE.match(text)
    if m:
        after = _split_args(text, m.end())[1]
        w = re.compile(r"\s*WITH\s*\(", re.I).match(text, after)
        opts = _options(_inside(text, w.end())) if w else {}
        column = opts.get("partition_column")
        if "hypertable" in opts and not _false(opts["hypertable"]) and column:
            d.hypertables[_name(m.group(1))] = (column, opts.get("chunk_interval"))


def _declare_compression(d: Declared, text: str) -> None:
    """ALTER TABLE ... SET (timescaledb.compress / enable_columnstore, segmentby, orderby)."""
    m = ALTER_SET.match(text)
    if m:
        opts = _options(_inside(text, m.end()))
        on = next((k for k in ("compress", "enable_columnstore") if k in opts), None)
        if on is not None:
            table = _name(m.group(2))
            if _false(opts[on]):
                d.compression.pop(table, None)
            else:
                # Not given: not declared (TimescaleDB picks defaults from the indexes and group-by columns).
                seg = opts.get("compress_segmentby", opts.get("segmentby"))
                order = opts.get("compress_orderby", opts.get("orderby"))
                d.compression[table] = (seg, order)


def _declare_call(d: Declared, fn: str, pos: list[str], named: dict[str, str]) -> None:
    """A call of TimescaleDB's API (create_hypertable, add_/remove_ a policy, set_chunk_time_interval)."""
    table = _name(_arg(pos, named, 0, "relation", "hypertable", "continuous_aggregate"))
    if fn == "create_hypertable":
        dim = _arg(pos, named, 1, "dimension", "time_column_name")
        by_range = re.match(r"^by_range\s*\(", dim or "", re.I)
        if by_range:
            dpos, dnamed = _call_args(dim or "", by_range.end())
            column = _value(_arg(dpos, dnamed, 0, "column_name"))
            interval = _value(_arg(dpos, dnamed, 1, "partition_interval"))
        else:
            column = _value(dim)
            interval = _value(_arg(pos, named, 4, "chunk_time_interval"))
        if column:
            d.hypertables[table] = (column, interval)
    elif fn == "set_chunk_time_interval" and table in d.hypertables:
        d.hypertables[table] = (d.hypertables[table][0], _value(_arg(pos, named, 1, "chunk_time_interval")))
    elif fn.startswith("add_") and fn != "add_continuous_aggregate_policy":
        kind = "retention" if "retention" in fn else "compression"
        when = _arg(
            pos,
            named,
            1,
            "compress_after",
            "drop_after",
            "after",
            "compress_created_before",
            "drop_created_before",
            "created_before",
        )
        d.policies[(kind, table)] = _value(when) or ""
    elif fn.startswith("remove_") and fn != "remove_continuous_aggregate_policy":
        d.policies.pop(("retention" if "retention" in fn else "compression", table), None)
    elif fn == "add_continuous_aggregate_policy":
        d.refresh[table] = (
            _value(_arg(pos, named, 1, "start_offset")),
            _value(_arg(pos, named, 2, "end_offset")),
            _value(_arg(pos, named, 3, "schedule_interval")),
        )
    elif fn == "remove_continuous_aggregate_policy":
        d.refresh.pop(table, None)


def _forget(d: Declared, name: str) -> None:
    for mapping in (d.hypertables, d.compression, d.caggs, d.refresh):
        mapping.pop(name, None)
    for key in [k for k in d.policies if k[1] == name]:
        d.policies.pop(key)


# --- the database's side -------------------------------------------------------------------------
SCHEMA_SQL = (
    "SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension e"
    " JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb'"
)


def extension_schema(rows: connect.Rows) -> str:
    """The schema TimescaleDB's functions live in, quoted, for qbctl's calls to name: a search_path that
    leaves it out (or puts a namesake function first) changes nothing. public where it is not installed."""
    found = rows(SCHEMA_SQL)
    return found[0][0] if found else "public"


@dataclass(frozen=True)
class Actual:
    hypertables: dict[str, tuple[str, str]]
    compression: dict[str, tuple[str, str]]
    jobs: list[dict]  # see read_jobs
    caggs: dict[str, str] = field(default_factory=dict)  # continuous aggregate -> its hypertable


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
    problem: str  # missing | different | extra | failed | paused | not running
    declared: str | None = None
    actual: str | None = None


def _job_label(j: dict) -> str:
    return f"job {j['job_id']} ({j['kind']}{' on ' + j['table'] if j['table'] else ''})"


def diff(decl: Declared, actual: Actual, same_interval) -> list[Drift]:
    """Every difference between declared and actual state. same_interval(a, b) compares intervals."""
    return (
        _diff_hypertables(decl, actual, same_interval)
        + _diff_caggs(decl, actual)
        + _diff_compression(decl, actual)
        + _diff_policies(decl, actual, same_interval)
        + _diff_refresh(decl, actual, same_interval)
        + _job_health(actual)
    )


def _diff_hypertables(decl: Declared, actual: Actual, same_interval) -> list[Drift]:
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
    return out


def _diff_caggs(decl: Declared, actual: Actual) -> list[Drift]:
    out: list[Drift] = []
    for view, source in decl.caggs.items():
        on = actual.caggs.get(view)
        if on is None:
            out.append(Drift(f"continuous aggregate {view}", "missing", f"on {source}"))
        elif source and on != source:
            out.append(Drift(f"continuous aggregate {view}", "different", f"on {source}", f"on {on}"))
    for view in actual.caggs.keys() - decl.caggs.keys():
        out.append(Drift(f"continuous aggregate {view}", "extra", None, f"on {actual.caggs[view]}"))
    return out


def _diff_compression(decl: Declared, actual: Actual) -> list[Drift]:
    out: list[Drift] = []
    for table, (seg, order) in decl.compression.items():
        have = actual.compression.get(table)
        shown = "on" if seg is None and order is None else f"segmentby {seg or ''}, orderby {order or ''}"
        if have is None:
            out.append(Drift(f"compression {table}", "missing", shown))
        elif (seg is not None and _norm_list(have[0]) != _norm_list(seg)) or (
            order is not None and _norm_order(have[1]) != _norm_order(order)
        ):
            out.append(Drift(f"compression {table}", "different", shown, f"segmentby {have[0]}, orderby {have[1]}"))
    for table in actual.compression.keys() - decl.compression.keys():
        out.append(Drift(f"compression {table}", "extra", None, f"segmentby {actual.compression[table][0]}"))
    return out


def _diff_policies(decl: Declared, actual: Actual, same_interval) -> list[Drift]:
    """Compression and retention policies: one job each, with the declared interval."""
    out: list[Drift] = []
    policy_jobs = [j for j in actual.jobs if j["kind"] in ("compression", "retention")]
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
    return out


def _diff_refresh(decl: Declared, actual: Actual, same_interval) -> list[Drift]:
    """Continuous aggregates' refresh policies: one job each, with the declared window and schedule."""
    out: list[Drift] = []
    refresh_jobs = [j for j in actual.jobs if j["kind"] == "refresh"]
    for view, (start, end, every) in decl.refresh.items():
        jobs = [j for j in refresh_jobs if j["table"] == view]
        name = f"refresh policy {view}"
        want = _refresh_text(start, end, every)
        if not jobs:
            out.append(Drift(name, "missing", want))
            continue
        for j in jobs[1:]:
            out.append(Drift(f"{name} (job {j['job_id']})", "extra", want, j["interval"]))
        j = jobs[0]
        if not (
            same_interval(start, j["start_offset"])
            and same_interval(end, j["end_offset"])
            and (every is None or same_interval(every, j["schedule_interval"]))
        ):
            out.append(
                Drift(
                    f"{name} (job {j['job_id']})",
                    "different",
                    want,
                    _refresh_text(j["start_offset"], j["end_offset"], j["schedule_interval"]),
                )
            )
    for j in refresh_jobs:
        if j["table"] not in decl.refresh:
            out.append(Drift(f"refresh policy {j['table']} (job {j['job_id']})", "extra", None, j["interval"]))
    return out


def _job_health(actual: Actual) -> list[Drift]:
    """Jobs whose last run failed, and policy jobs paused or not running."""
    out: list[Drift] = []
    for j in actual.jobs:
        if j.get("last_run_status") == "Failed":
            out.append(Drift(_job_label(j), "failed", None, j.get("why") or f"{j['total_failures']} failures"))
        elif j["kind"] in PROC and j.get("problem") in ("paused", "not running"):
            out.append(
                Drift(
                    _job_label(j),
                    j["problem"],
                    "scheduled" if j["problem"] == "paused" else f"runs every {j.get('schedule_interval')}",
                    j.get("why"),
                )
            )
    return out


def _refresh_text(start, end, every) -> str:
    return f"{start or 'NULL'} .. {end or 'NULL'}" + (f", every {every}" if every else "")


JOBS_SQL = """
SELECT j.job_id, j.proc_name, j.hypertable_name, j.scheduled,
       COALESCE(j.config->>'compress_after', j.config->>'drop_after', j.config->>'compress_created_before',
                j.config->>'drop_created_before'),
       s.last_run_status, COALESCE(s.total_failures, 0), s.last_run_started_at::text, s.next_start::text,
       j.schedule_interval::text, COALESCE(s.total_runs, 0), s.job_status,
       j.config->>'start_offset', j.config->>'end_offset',
       COALESCE(s.next_start > '-infinity' AND s.next_start < now() - make_interval(secs => %s), false),
       (s.next_start IS NULL OR s.next_start <= now()),
       CASE WHEN s.last_run_status = 'Failed' THEN
         (SELECT e.err_message FROM timescaledb_information.job_errors e WHERE e.job_id = j.job_id
          ORDER BY e.finish_time DESC NULLS LAST LIMIT 1) END
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.job_stats s USING (job_id)
WHERE j.proc_name <> 'policy_telemetry'
ORDER BY j.job_id
"""
# Who runs jobs here: TimescaleDB's launcher, a scheduler per database, a worker per running job.
SCHEDULER_SQL = r"""
SELECT current_setting('timescaledb.max_background_workers', true), current_setting('max_worker_processes'),
       count(*) FILTER (WHERE backend_type = 'TimescaleDB Background Worker Scheduler'
                        AND datname = current_database()),
       COALESCE(array_agg(datname::text ORDER BY datname)
                FILTER (WHERE backend_type = 'TimescaleDB Background Worker Scheduler'), '{}'),
       count(*) FILTER (WHERE starts_with(backend_type, 'TimescaleDB Background Worker') OR backend_type ~ '\[\d+\]$'),
       greatest(pg_postmaster_start_time(),
                min(backend_start) FILTER (WHERE backend_type = 'TimescaleDB Background Worker Scheduler'
                                           AND datname = current_database()))
         < now() - make_interval(secs => %s)
FROM pg_stat_activity
"""
SETTLED_SQL = (
    "SELECT COALESCE(max(applied_at) < now() - make_interval(secs => %s), true) FROM qbctl.migrations"
    " WHERE to_regclass('qbctl.migrations') IS NOT NULL"
)


@dataclass(frozen=True)
class Scheduler:
    workers: str | None  # timescaledb.max_background_workers
    running: bool  # a scheduler runs for this database
    busy: int  # TimescaleDB background workers in use on the server
    settled: bool  # the server, the scheduler and the last migrate are older than JOB_GRACE_SECONDS
    processes: str | None = None  # max_worker_processes: PostgreSQL's own limit, shared with parallel queries
    databases: tuple[str, ...] = ()  # the databases a scheduler runs for (every one with the extension)

    @property
    def job_slots(self) -> int | None:
        """Jobs that can run at once: the workers the launcher and the schedulers leave."""
        workers = self.workers or ""
        if not workers.isdigit():
            return None
        return max(0, int(workers) - 1 - len(self.databases))

    def arithmetic(self) -> str:
        """timescaledb.max_background_workers, worker by worker, as counted on the running server."""
        if self.job_slots is None or self.workers == "0":
            return f"timescaledb.max_background_workers {self.workers}: no launcher, no scheduler, no job"
        names = f" ({', '.join(self.databases)})" if self.databases else ""
        plural = "" if len(self.databases) == 1 else "s"
        return (
            f"timescaledb.max_background_workers {self.workers} = the launcher + {len(self.databases)} "
            f"scheduler{plural}{names} + {self.job_slots} job slot{'' if self.job_slots == 1 else 's'}"
        )


def read_scheduler(conn) -> Scheduler:
    workers, processes, schedulers, databases, busy, settled = conn.execute(
        SCHEDULER_SQL, (JOB_GRACE_SECONDS,)
    ).fetchone()
    if settled and conn.execute("SELECT to_regclass('qbctl.migrations') IS NOT NULL").fetchone()[0]:
        settled = conn.execute(SETTLED_SQL, (JOB_GRACE_SECONDS,)).fetchone()[0]
    return Scheduler(workers, bool(schedulers), int(busy or 0), bool(settled), processes, tuple(databases or ()))


def _cannot_start(sched: Scheduler) -> str:
    if not sched.running:
        return (
            f"no TimescaleDB scheduler runs for this database (timescaledb.max_background_workers="
            f"{sched.workers}): raise TIMESCALEDB_MAX_BACKGROUND_WORKERS"
        )
    return (
        f"the scheduler has not started it: out of background workers? {sched.busy} of "
        f"timescaledb.max_background_workers={sched.workers} in use ({sched.arithmetic()}, each running job "
        "takes a slot); the server log says (`qbctl logs postgres`)"
    )


def slots_problem(sched: Scheduler) -> str | None:
    """Why no job of this database can ever run for want of background workers, or None. Said at once, as
    the schedulers run: their count is no matter of time (without any, job_state says why after its grace)."""
    if not sched.running or sched.job_slots is None or sched.job_slots >= 1:
        return None
    enough = 1 + max(1, len(sched.databases)) + 1  # the launcher, the schedulers (one at least), a job
    return (
        f"no background worker is left for jobs: {sched.arithmetic()}; raise TIMESCALEDB_MAX_BACKGROUND_WORKERS "
        f"to {enough} or more and `qbctl up`"
    )


def job_state(j: dict, sched: Scheduler) -> tuple[str | None, str]:
    """(problem or None, why) of one job: why it has or has not run."""
    if not j["scheduled"]:
        return "paused", "paused (scheduled = false): alter_job(..., scheduled => true) resumes it"
    if j["job_status"] == "Running":
        return None, f"running since {(j['last_run'] or '?')[:19]}"
    if j["last_run_status"] == "Failed":
        error = " ".join((j.get("error") or "").split())
        if "failed to start a background worker" in error or "failed to start job" in error:
            return "failed", (
                f"PostgreSQL could not start a worker for it: max_worker_processes={sched.processes} "
                f"leaves no room for timescaledb.max_background_workers={sched.workers} besides the "
                "server's other background workers; lower TIMESCALEDB_MAX_BACKGROUND_WORKERS or raise "
                "max_worker_processes"
            )
        return "failed", (
            f"its last run failed ({j['total_failures']} failures)"
            + (f": {error[:160]}" if error else ": timescaledb_information.job_errors")
        )
    if j["total_runs"] == 0 and j["due"]:
        if not sched.settled:
            return None, "not run yet: due now"
        return "not running", "never ran: " + _cannot_start(sched)
    if j["overdue"] and sched.settled:
        return "not running", f"overdue since {(j['next_start'] or '?')[:19]}: " + _cannot_start(sched)
    return None, f"next run {(j['next_start'] or 'now')[:19]}"


def read_jobs(conn, sched: Scheduler | None = None) -> list[dict]:
    """Every job but telemetry, with text timestamps (a running job's next_start is -infinity) and
    `problem` / `why` from job_state."""
    sched = sched or read_scheduler(conn)
    jobs = []
    for r in conn.execute(JOBS_SQL, (JOB_GRACE_SECONDS,)):
        kind = KIND.get(r[1], r[1])
        interval = r[4] if kind != "refresh" else _refresh_text(r[12], r[13], None)
        j = {
            "job_id": r[0],
            "kind": kind,
            "table": r[2],
            "scheduled": r[3],
            "interval": interval,
            "last_run_status": r[5],
            "total_failures": r[6],
            "last_run": r[7],
            "next_start": r[8],
            "schedule_interval": r[9],
            "total_runs": r[10],
            "job_status": r[11],
            "start_offset": r[12],
            "end_offset": r[13],
            "overdue": r[14],
            "due": r[15],
            "error": r[16],
        }
        j["problem"], j["why"] = job_state(j, sched)
        if j["problem"] == "paused" and kind not in PROC:
            j["problem"] = None  # a paused job of your own is your choice; a declared policy's is drift
        jobs.append(j)
    return jobs


MATERIALIZED = (
    "SELECT materialization_hypertable_schema, materialization_hypertable_name, view_name,"
    " hypertable_name FROM timescaledb_information.continuous_aggregates"
)


def read_actual(conn) -> Actual:
    caggs = conn.execute(MATERIALIZED).fetchall()
    internal = {(s, n): v for s, n, v, _ in caggs}  # a cagg's materialization hypertable -> the cagg
    ht = {
        r[0]: (r[1], r[2])
        for r in conn.execute(
            "SELECT d.hypertable_name, d.column_name, COALESCE(d.time_interval::text, d.integer_interval::text)"
            " FROM timescaledb_information.dimensions d JOIN timescaledb_information.hypertables h"
            " USING (hypertable_schema, hypertable_name) WHERE d.dimension_number = 1"
        )
    }
    comp = {}
    for schema, name, seg, order in conn.execute(
        "SELECT n.nspname::text, c.relname::text, s.segmentby, s.orderby"
        " FROM timescaledb_information.hypertable_compression_settings s"
        " JOIN pg_catalog.pg_class c ON c.oid = s.hypertable"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN timescaledb_information.hypertables h"
        "   ON (h.hypertable_schema, h.hypertable_name) = (n.nspname, c.relname)"
        " WHERE h.compression_enabled OR h.hypertable_name IS NULL"
    ):
        # a cagg's compression is listed under its materialization hypertable
        comp[internal.get((schema, name), name)] = (seg or "", order or "")
    enabled = {
        r[0]
        for r in conn.execute(
            "SELECT view_name FROM timescaledb_information.continuous_aggregates WHERE compression_enabled"
        )
    }
    comp = {k: v for k, v in comp.items() if k in ht or k in enabled}
    return Actual(ht, comp, read_jobs(conn), {v: source for _, _, v, source in caggs})


def interval_comparer(conn):
    import psycopg

    def same(a: str | None, b: str | None) -> bool:
        if a is None or b is None:
            return a == b
        try:
            return bool(conn.execute("SELECT %s::interval = %s::interval", (a, b)).fetchone()[0])
        except psycopg.Error:  # an integer time column's offsets are numbers
            return a.strip() == b.strip()

    return same


@dataclass
class VerifyResult(Result):
    database: str
    timescaledb: str | None
    drift: list[dict] = field(default_factory=list)
    checked: int = 0
    ok: bool = True
    error: QbctlError | None = None


def verify(settings: Settings, *, rt: Runtime) -> VerifyResult:
    from qbctl.db.migrate import read_state

    decl = declared(sqlfiles.load(settings))
    with connect.connect(settings, rt=rt) as conn:
        version = read_state(connect.psycopg_rows(conn)).timescaledb
        if not version:
            raise TimescaleMissing(
                f"the timescaledb extension is not installed in {settings.pg.masked()}",
                hint="`qbctl db migrate` creates it (on a server that provides it)",
            )
        drift = diff(decl, read_actual(conn), interval_comparer(conn))
    result = VerifyResult(settings.pg.masked(), version, [asdict(d) for d in drift], decl.count, not drift)
    if drift:
        result.fail(
            CheckFailed(
                f"{len(drift)} difference(s) between sql/ and the database",
                code="DRIFT",
                hint="`qbctl db migrate` re-applies the policies; a failed job's error is in "
                "timescaledb_information.job_errors; a job that does not run: see the why "
                "column of `qbctl db status`",
            )
        )
    return result
