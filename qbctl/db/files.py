"""The migration files on disk: discovery, normalisation, checksums and policy templates.

The files come from the project's own sql/ folder when it has one, else from the QB schema that
ships inside the package (sql_dir). sql/schema/*.sql are versioned migrations, applied once. sql/policies/*.sql are
templates ({{SETTING}}) rendered from the settings and re-applied whenever their
rendered text changes. A first-line comment `-- qbctl: requires timescaledb` marks a
schema file that needs the extension; every policy file needs it.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from qbctl.config.settings import Settings
from qbctl.errors import ConfigError

PLACEHOLDER = re.compile(r"\{\{\s*([A-Z0-9_]+)\s*\}\}")
TEMPLATE_KEYS = ("DATA_RETENTION_DAYS", "LOG_RETENTION_DAYS", "COMPRESSION_AFTER_DAYS", "MAX_CANDLES_PER_SYMBOL")
REQUIRES_TSDB = re.compile(r"^--\s*qbctl:\s*requires\s+timescaledb\s*$", re.M | re.I)


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


def normalise(raw: bytes) -> str:
    """BOM stripped, CRLF and CR read as LF: an editor's line endings do not change a checksum."""
    text = raw.decode("utf-8-sig")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def render(text: str, settings: Settings, path: Path) -> str:
    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in TEMPLATE_KEYS:
            line = text[: m.start()].count("\n") + 1
            raise ConfigError(f"{path}:{line}: unknown placeholder {{{{{key}}}}}",
                              hint="policy templates may use " + ", ".join(TEMPLATE_KEYS))
        return str(settings[key])
    return PLACEHOLDER.sub(sub, text)


def packaged_sql() -> Path:
    """The QB schema that ships with qbctl: qbctl/sql/ in an installed package (pyproject.toml maps
    the repository's sql/ there); in a source checkout (PYTHONPATH, pip install -e) that sql/ itself."""
    package = Path(__file__).resolve().parent.parent
    for folder in (package / "sql", package.parent / "sql"):
        if (folder / "schema").is_dir() and (folder.parent == package or (folder.parent / "pyproject.toml").exists()):
            return folder
    raise ConfigError(f"qbctl's own schema is missing from {package / 'sql'}: the installation is incomplete",
                      code="SQL_NOT_FOUND", hint="reinstall qbctl (pip install --force-reinstall ./tools/qbctl)")


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
                text = normalise(path.read_bytes())
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read {path}: {exc}") from None
            if kind == "policy":
                text = render(text, settings, path)
            needs = kind == "policy" or bool(REQUIRES_TSDB.search(text))
            files.append(SqlFile(kind, path.name, path, text, checksum(text), needs))
    return files
