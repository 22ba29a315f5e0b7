"""The migration files on disk: discovery, normalisation, checksums and policy templates.

sql/schema/*.sql are versioned migrations, applied once. sql/policies/*.sql are
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
from qbctl.errors import ConfigError, UsageError

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


def sql_dir(settings: Settings) -> Path:
    folder = settings.root / "sql"
    if not (folder / "schema").is_dir():
        raise UsageError(f"no sql/schema folder in {settings.root} or any folder above it",
                         code="SQL_NOT_FOUND",
                         hint="run qbctl inside the backend's checkout (the folder that holds sql/)")
    return folder


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
