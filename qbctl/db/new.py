"""qbctl db new NAME: the next-numbered file in the project's sql/schema, with the marker when asked.

The number follows the folder's own scheme: sequence numbers of the width already used (0006 after
0005), or a UTC timestamp where the files are named by one (dbmate, goose: 20260101120000_x.sql);
0001 in an empty folder. Files apply in name order, so a new file must sort after every applied
one: one sorting before would run after them on this database and before them on a new one. The
applied files are read from the tracking table where the database answers (over libpq, within 2 s);
where it does not, every file in sql/schema counts as applied, and the result says so.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qbctl.config.settings import Settings
from qbctl.db import files
from qbctl.errors import ConfigError, QbctlError, UsageError
from qbctl.result import Result

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime

NUMBERED = re.compile(r"^(\d+)_")
TIMESTAMP_DIGITS = 12  # a prefix this long is a time (YYYYmmddHHMM[SS]), not a sequence number


@dataclass
class NewResult(Result):
    path: str  # as given to the user: relative to the current folder when inside it
    name: str
    no_transaction: bool
    checked_against: str  # which names the order was checked against
    ok: bool = True
    error: QbctlError | None = None


def file_name(name: str, existing: list[str], now: float | None = None) -> str:
    """The file name for NAME among `existing` names (pure): NAME's own number when it has one."""
    stem = name.strip().removesuffix(".sql")
    m = NUMBERED.match(stem)
    number, rest = (m.group(1), stem[m.end() :]) if m else (None, stem)
    slug = re.sub(r"[^0-9A-Za-z]+", "_", rest).strip("_").lower()
    if not slug:
        raise UsageError(
            f"db new: {name!r} has no letters or digits to name the file by",
            hint="give a few words saying what the migration does, e.g. qbctl db new add_audit_table",
        )
    if number is None:
        number = _next_number(existing, now)
    return f"{number}_{slug}.sql"


def _next_number(existing: list[str], now: float | None) -> str:
    numbers = [m.group(1) for n in existing if (m := NUMBERED.match(n))]
    if not numbers:
        return "0001"
    width = max(len(n) for n in numbers)
    top = max(int(n) for n in numbers)
    if width >= TIMESTAMP_DIGITS:
        fmt = "%Y%m%d%H%M%S" if width >= 14 else "%Y%m%d%H%M"
        stamp = int(time.strftime(fmt, time.gmtime(now if now is not None else time.time())))
        return str(max(stamp, top + 1))
    return str(top + 1).zfill(width)


def applied_names(settings: Settings, *, rt: Runtime) -> list[str] | None:
    """The schema files the database has applied; None when it cannot be read (no server, no table yet)."""
    from qbctl.db import connect, libpq
    from qbctl.db.migrate import read_applied, read_state

    conn = libpq.connect(connect.dsn(settings, rt=rt), timeout=2)
    if conn is None:
        return None
    with conn:
        try:
            state = read_state(conn.rows)
            return [n for (kind, n) in read_applied(conn.rows, state) if kind == "schema"]
        except libpq.Failed:
            return None


TEMPLATE = """-- {title}
{marker}
"""
NO_TX_NOTE = (
    "-- Each statement commits by itself (CREATE INDEX CONCURRENTLY, VACUUM, ...): write them to be\n"
    "-- repeatable (IF NOT EXISTS), and a group that must be atomic as BEGIN; ... COMMIT;"
)


def new(
    settings: Settings, name: str, no_transaction: bool = False, cwd: Path | None = None, *, rt: Runtime
) -> NewResult:
    folder = settings.root / "sql" / "schema"
    if files.sql_dir(settings) != settings.root / "sql":
        shipped = files.packaged_sql()
        raise ConfigError(
            f"{settings.root} has no sql/schema of its own: its migrations are the schema shipped "
            "with qbctl, which db new does not write into",
            code="NO_SCHEMA_FOLDER",
            hint=f"to keep a schema of your own, copy the shipped one first: mkdir -p sql && cp -r "
            f"{shipped / 'schema'} {shipped / 'policies'} sql/",
        )
    local = sorted(p.name for p in folder.glob("*.sql"))
    applied = applied_names(settings, rt=rt)
    known = applied if applied is not None else local
    checked = (
        "the files the database has applied"
        if applied is not None
        else "every file in sql/schema (the database did not answer, so any of them may be applied)"
    )
    target = file_name(name, local + (applied or []))
    later = sorted(n for n in known if n >= target)
    if (folder / target).exists():
        raise UsageError(
            f"sql/schema/{target} exists already",
            code="FILE_EXISTS",
            hint="name the migration differently, or edit that file if it is not applied yet",
        )
    if later:
        raise UsageError(
            f"sql/schema/{target} would sort before {later[-1]}, which is applied: it would run after "
            "it here and before it on a new database; nothing was written",
            code="NAME_BEFORE_APPLIED",
            hint=f"leave the number out (qbctl db new {target.split('_', 1)[1][:-4]}) and the next one is taken",
        )
    text = TEMPLATE.format(
        title=target.split("_", 1)[1][:-4].replace("_", " "),
        marker=f"{NO_TX_NOTE}\n-- qbctl: no-transaction\n" if no_transaction else "",
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / target
    with path.open("x", encoding="utf-8") as f:  # never over a file written meanwhile
        f.write(text)
    here = (cwd or Path.cwd()).resolve()
    shown = str(path.relative_to(here)) if path.resolve().is_relative_to(here) else str(path)
    return NewResult(shown, target, no_transaction, checked)
