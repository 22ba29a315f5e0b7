"""qbctl db lint: which files, which catalog, qbctl's TimescaleDB rules and squawk's PostgreSQL ones.

- Files: the pending ones (what the next `db migrate` runs: new schema files, changed policy files,
  the rest of a partial file), or the ones named. Without a database that answers, every file.
- Catalog: the live database's (db/catalog.py) where it answers within 2 s; the rules also replay the
  files themselves, so a database that is not there still gets the declared tables, hypertables,
  columnstore and policies.
- Rules: db/lint.py (TimescaleDB, measured on 2.28.3) and squawk (`squawk-cli`, a maintained linter of
  plain PostgreSQL migrations), of which only the rules about locks, rewrites and failures are kept:
  its style rules (prefer-text-field, prefer-robust-stmts, ...) are opinions, not what happens on the
  VM, and its index rules advise CONCURRENTLY, which hypertables refuse.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from qbctl.config.settings import Settings
from qbctl.db import files
from qbctl.errors import CheckFailed, QbctlError, Unavailable, UsageError
from qbctl.events import Event, Events, Status, ignore
from qbctl.result import Result

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime

SQUAWK_RULES = {  # squawk's rules about what a statement does to the server: kept, as warnings
    "adding-field-with-default",
    "adding-required-field",
    "adding-not-nullable-field",
    "adding-foreign-key-constraint",
    "adding-serial-primary-key-field",
    "constraint-missing-not-valid",
    "changing-column-type",
    "disallowed-unique-constraint",
    "ban-drop-column",
    "ban-drop-table",
    "ban-drop-database",
    "ban-truncate-cascade",
    "renaming-column",
    "renaming-table",
    "require-concurrent-reindex",
    "ban-alter-domain-with-add-constraint",
    "ban-create-domain-with-constraint",
}


@dataclass(frozen=True, kw_only=True)
class LintOptions:
    paths: tuple[str, ...] = ()
    strict: bool = False  # warnings fail too


@dataclass
class LintResult(Result):
    files: list[str] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)
    catalog: str = ""  # where the tables' state came from
    squawk: str = ""  # its version, or why it did not run
    errors: int = 0
    warnings: int = 0
    strict: bool = False
    ok: bool = True
    error: QbctlError | None = None


def lint(
    settings: Settings, options: LintOptions = LintOptions(), events: Events = ignore, *, rt: Runtime
) -> LintResult:
    from qbctl.db import catalog as cat
    from qbctl.db import lint as rules

    local = files.load(settings)
    result = LintResult(strict=options.strict)
    live, pending, fresh, why = _live(settings, local, rt)
    catalog = live or cat.Catalog()
    result.catalog = f"the live database ({settings.pg.masked()})" if live else f"the files only: {why}"
    ordered = [f for f in local if f.kind == "schema"]
    named = _named(settings, local, options.paths)
    extra = [f for f in named if f not in local]
    ordered += extra + [f for f in local if f.kind == "policy"]
    if options.paths:
        targets = [f for f in ordered if f in named]
    elif pending is not None:
        targets = [f for f in ordered if f.label in pending]
    else:
        targets = ordered
    result.files = [f.label for f in targets]
    if not targets:
        return result
    events(Event(Status.WORKING, f"linting {len(targets)} files"))
    lint_files = [rules.LintFile(f.label, f.kind, f.statements) for f in ordered]
    # A database that applied some files (a developer's, staging, the VM): the other pending files go out in the
    # same deploy. A fresh one (CI) says nothing about the VM, where every earlier file ran long ago.
    deployed_with = set(pending) if pending and not fresh else set()
    found = rules.check(lint_files, catalog, set(result.files), deployed_with)
    squawk, result.squawk = _squawk(targets)
    errors_at = {(f.file, f.line) for f in found if f.severity == "error"}
    found += [f for f in squawk if (f.file, f.line) not in errors_at]
    order = {label: k for k, label in enumerate(result.files)}
    found.sort(key=lambda f: (order.get(f.file, 0), f.line, f.severity != "error", f.rule))
    result.findings = [
        {
            "rule": f.rule,
            "severity": f.severity,
            "file": f.file,
            "line": f.line,
            "message": f.message,
            "safe": f.safe,
            "source": f.source,
        }
        for f in found
    ]
    result.errors = sum(f.severity == "error" for f in found)
    result.warnings = len(found) - result.errors
    failing = result.errors + (result.warnings if options.strict else 0)
    if failing:
        what = f"{result.errors} error{'s' * (result.errors != 1)}"
        if options.strict and result.warnings:
            what += f" and {result.warnings} warning{'s' * (result.warnings != 1)} (--strict)"
        result.fail(
            CheckFailed(
                f"db lint: {what} in {len(targets)} file{'s' * (len(targets) != 1)}",
                code="LINT_FAILED",
                hint="each finding says what will happen on the VM and the safe way to write it",
            )
        )
    return result


def _live(settings: Settings, local: list[files.SqlFile], rt: Runtime):
    """(the live catalog, the labels of the pending files, whether it applied none, why not) where the
    database answers."""
    from qbctl.db import catalog as cat
    from qbctl.db import connect
    from qbctl.db.migrate import TODO, plan, read_applied, read_state

    try:
        conn = connect.connect(settings, wait=0, timeout=2, rt=rt)
    except Unavailable as exc:
        return None, None, True, f"the database did not answer ({exc.message}); every file is linted"
    with conn:
        rows = connect.psycopg_rows(conn)
        state = read_state(rows)
        applied = read_applied(rows, state)
        pending = {i.file for i in plan(local, applied, timescaledb=True) if i.state in TODO}
        fresh = not any(kind == "schema" for kind, _ in applied)
        return cat.read(rows, settings.pg.masked()), pending, fresh, ""


def _named(settings: Settings, local: list[files.SqlFile], paths: tuple[str, ...]) -> list[files.SqlFile]:
    out = []
    by_path = {f.path.resolve(): f for f in local}
    for p in paths:
        path = Path(p).expanduser()
        if not path.is_file():
            raise UsageError(
                f"db lint: {p}: no such file",
                hint="name migration files (sql/schema/0006_x.sql), or none to lint the pending ones",
            )
        if path.resolve() in by_path:
            out.append(by_path[path.resolve()])
            continue
        raw = path.read_bytes()
        try:
            text = files.normalise(raw)
        except UnicodeDecodeError as exc:
            raise files.not_utf8(p, path, raw, exc) from None
        out.append(files.SqlFile("schema", path.name, path, text, files.checksum(text), False))
    return out


def squawk_binary() -> str | None:
    beside = Path(sys.executable).parent / "squawk"  # the venv qbctl is installed in
    return str(beside) if beside.exists() else shutil.which("squawk")


def _squawk(targets: list[files.SqlFile]):
    """squawk's findings on the files as they run (rendered policies, goose/dbmate Up sections), and its
    version or why it did not run."""
    from qbctl.db.lint import Finding

    binary = squawk_binary()
    if binary is None:
        return [], "not installed (pip install squawk-cli): plain PostgreSQL rules skipped"
    with tempfile.TemporaryDirectory(prefix="qbctl-lint-") as tmp:
        names = {}
        for k, f in enumerate(targets):
            path = Path(tmp) / f"{k:04d}.sql"
            path.write_text(f.runnable, encoding="utf-8")
            names[str(path)] = f.label
        try:
            version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
            version = (version.split() or ["?"])[-1]
            proc = subprocess.run(
                [binary, "--reporter", "json", "--pg-version", "15", *names], capture_output=True, text=True, timeout=60
            )
            found = json.loads(proc.stdout or "[]")
        except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
            return [], f"did not run ({exc}): plain PostgreSQL rules skipped"
    out = []
    for x in found:
        if x.get("rule_name") not in SQUAWK_RULES or x.get("file") not in names:
            continue
        out.append(
            Finding(
                f"squawk/{x['rule_name']}",
                "warning",
                names[x["file"]],
                int(x.get("line", 0)) + 1,
                " ".join(str(x.get("message", "")).split()),
                " ".join(str(x.get("help") or "").split()) or f"see https://squawkhq.com/docs/{x['rule_name']}",
                source="squawk",
            )
        )
    return out, version
