"""The migration files on disk: discovery, normalisation, checksums and policy templates.

The files come from the project's own sql/ folder when it has one, else from the QB schema that
ships inside the package (sql_dir). sql/schema/*.sql are versioned migrations, applied once. sql/policies/*.sql are
templates ({{SETTING}}) expanded from the settings (`expand`) and re-applied whenever their
expanded text changes.

Markers, read from a file's leading comment lines (before its first statement):
`-- qbctl: requires timescaledb` (a schema file that needs the extension; every policy file
does) and `-- qbctl: no-transaction` (run it statement by statement). goose's and dbmate's own
markers mean what they mean there: `-- +goose NO TRANSACTION`, `-- migrate:up transaction:false`,
and only the Up section of a file with `-- +goose Up` / `-- migrate:up` runs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

from qbctl.config.settings import Settings
from qbctl.config.values import Values
from qbctl.errors import ConfigError

PLACEHOLDER = re.compile(r"\{\{\s*([A-Z0-9_]+)\s*\}\}")
# The settings a policy template may name ({{DATA_RETENTION_DAYS}}), each with its typed value.
TEMPLATE_VALUES: dict[str, Callable[[Values], int]] = {
    "DATA_RETENTION_DAYS": lambda v: v.data_retention_days,
    "LOG_RETENTION_DAYS": lambda v: v.log_retention_days,
    "COMPRESSION_AFTER_DAYS": lambda v: v.compression_after_days,
    "MAX_CANDLES_PER_SYMBOL": lambda v: v.max_candles_per_symbol,
}
TEMPLATE_KEYS = tuple(TEMPLATE_VALUES)
REQUIRES_TSDB = re.compile(r"^--\s*qbctl:\s*requires\s+timescaledb\s*$", re.I)
NO_TRANSACTION = re.compile(r"^--\s*qbctl:\s*no-transaction\s*$", re.I)
# Other tools' markers, on a line of their own anywhere (that is how goose and dbmate read them).
FOREIGN_NO_TRANSACTION = re.compile(
    r"^--\s*(?:\+goose\s+NO\s+TRANSACTION|migrate:up\b.*\btransaction:\s*false)\s*$", re.I | re.M
)
UP = re.compile(r"^--\s*(?:\+goose\s+Up|migrate:up)\b", re.I)
DOWN = re.compile(r"^--\s*(?:\+goose\s+Down|migrate:down)\b", re.I)


@dataclass(frozen=True)
class SqlFile:
    kind: str  # schema | policy
    name: str  # file name, the key in the tracking table
    path: Path
    text: str  # normalised and, for policies, rendered
    checksum: str
    needs_timescaledb: bool

    @property
    def label(self) -> str:
        return f"sql/{'schema' if self.kind == 'schema' else 'policies'}/{self.name}"

    @cached_property
    def runnable(self) -> str:
        """The text that runs: all of it, or the Up section of a goose or dbmate file (the other
        lines blanked, so that line numbers stay the file's)."""
        lines = self.text.split("\n")
        if not any(UP.match(line) for line in lines):
            return self.text
        keep, out = False, []
        for line in lines:
            if UP.match(line):
                keep = True
            elif DOWN.match(line):
                keep = False
            out.append(line if keep else "")
        return "\n".join(out)

    @cached_property
    def statements(self):
        from qbctl.db.statements import split

        return split(self.runnable)

    @cached_property
    def marked_no_transaction(self) -> str | None:
        """The marker that asks for statement by statement, as written; None without one."""
        for line in leading_comments(self.text):
            if NO_TRANSACTION.match(line):
                return line.strip()
        m = FOREIGN_NO_TRANSACTION.search(self.text)
        return m.group().strip() if m else None


def leading_comments(text: str) -> list[str]:
    """The comment lines before a file's first statement (blank lines skipped)."""
    out = []
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("--"):
            out.append(stripped)
        elif stripped:
            break
    return out


def normalise(raw: bytes) -> str:
    """BOM stripped, CRLF and CR read as LF: an editor's line endings do not change a checksum."""
    text = raw.decode("utf-8-sig")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def not_utf8(label: str, path: Path, raw: bytes, exc: UnicodeDecodeError) -> ConfigError:
    """One line: which file, which line and column, and how to convert it."""
    line = raw.count(b"\n", 0, exc.start) + 1
    column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
    return ConfigError(
        f"{label}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {column})",
        code="SQL_NOT_UTF8",
        hint=f"qbctl reads SQL files as UTF-8; convert this one, e.g. from Latin-1: "
        f"iconv -f latin1 -t utf8 {path} > {path}.utf8 && mv {path}.utf8 {path}",
    )


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def expand(text: str, settings: Settings, path: Path) -> str:
    """A policy template with its {{SETTING}} placeholders replaced by the settings' values (SQL templates are
    "expanded"; "render" is the compose file's word, "views" draw results)."""

    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in TEMPLATE_KEYS:
            line = text[: m.start()].count("\n") + 1
            raise ConfigError(
                f"{path}:{line}: unknown placeholder {{{{{key}}}}}",
                hint="policy templates may use " + ", ".join(TEMPLATE_KEYS),
            )
        return str(TEMPLATE_VALUES[key](settings.values))

    return PLACEHOLDER.sub(sub, text)


def packaged_sql() -> Path:
    """The QB schema that ships with qbctl: qbctl/sql/ in an installed package (pyproject.toml maps
    the repository's sql/ there); in a source checkout (PYTHONPATH, pip install -e) that sql/ itself."""
    package = Path(__file__).resolve().parent.parent
    for folder in (package / "sql", package.parent / "sql"):
        if (folder / "schema").is_dir() and (folder.parent == package or (folder.parent / "pyproject.toml").exists()):
            return folder
    raise ConfigError(
        f"qbctl's own schema is missing from {package / 'sql'}: the installation is incomplete",
        code="SQL_NOT_FOUND",
        hint="reinstall qbctl (pip install --force-reinstall ./tools/qbctl)",
    )


def sql_dir(settings: Settings) -> Path:
    """The project's own sql/ (with sql/schema) when it has one, else the schema shipped with qbctl."""
    folder = settings.root / "sql"
    if (folder / "schema").is_dir():
        return folder
    return packaged_sql()


def describe(settings: Settings) -> str:
    """Which schema the db commands use, in words."""
    folder = sql_dir(settings)
    return f"{folder} (" + ("the project's own" if folder == settings.root / "sql" else "shipped with qbctl") + ")"


def load(settings: Settings) -> list[SqlFile]:
    """Schema files in name order, then policy files in name order."""
    folder = sql_dir(settings)
    files = []
    for kind, sub in (("schema", "schema"), ("policy", "policies")):
        for path in sorted((folder / sub).glob("*.sql")):
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read {path}: {exc}") from None
            try:
                text = normalise(raw)
            except UnicodeDecodeError as exc:
                raise not_utf8(f"sql/{sub}/{path.name}", path, raw, exc) from None
            if kind == "policy":
                text = expand(text, settings, path)
            needs = kind == "policy" or any(REQUIRES_TSDB.match(line) for line in leading_comments(text))
            files.append(SqlFile(kind, path.name, path, text, checksum(text), needs))
    return files
