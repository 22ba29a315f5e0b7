"""The settings table of docs/settings.md, .env.example and the typed `Values` of qbctl/config/values.py,
made from the SETTINGS table (one source).

`python -m qbctl.config.docs` rewrites the three in a checkout; `--check` exits 1 when one is stale
(tests/unit/test_docs_are_true.py runs the same comparison). The command reference is its sibling,
`python -m qbctl.reference`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from qbctl.config.settings import SETTINGS, Setting

START, END = "<!-- settings:start (made by python -m qbctl.config.docs) -->", "<!-- settings:end -->"
SETTINGS_PAGE = Path("docs") / "settings.md"  # the page whose table is made here
EXAMPLE_HEAD = """\
# qbctl and the QB backend read these settings from .env (the environment wins over this file).
# Every line shows the default: with no .env at all, `qbctl up` runs exactly this.
# `qbctl env check` compares your .env with this file. Made by `python -m qbctl.config.docs`.
"""


def env_example() -> str:
    lines = [EXAMPLE_HEAD, "\n"]
    for i, s in enumerate(SETTINGS):
        if s.key.startswith("QBCTL_") and not SETTINGS[i - 1].key.startswith("QBCTL_"):
            lines.append("\n# --- qbctl's own settings ---\n")
        lines.append(f"# {s.help}\n")
        if s.why:
            lines.append(f"# why this default: {s.why}\n")
        lines.append(f"{s.key}={s.default}\n")
    return "".join(lines)


def settings_table() -> str:
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        meaning = s.help + (f". Why this default: {s.why}" if s.why else "")
        rows.append(f"| `{s.key}` | `{s.default}` | {meaning.replace('|', '/')} |")
    return "\n".join(rows)


def with_table(text: str) -> str:
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    return f"{before}{START}\n{settings_table()}\n{END}{after}"


VALUES_MODULE = Path("qbctl") / "config" / "values.py"
# The Python type each kind of setting parses to (settings.PARSERS): the attribute's type in Values.
KIND_TYPES = {
    "pg_url": "PgUrl",
    "redis_url": "RedisUrl",
    "size": "int",
    "port": "int",
    "days": "int",
    "count": "int",
    "connections": "int",
    "workers": "int",
    "seconds": "int",
}
VALUES_HEAD = '''"""Every setting's parsed value, one typed attribute each (`settings.values.qbctl_up_timeout`).

Made by `python -m qbctl.config.docs` from the SETTINGS table (qbctl/config/settings.py): do not edit.
"""

from __future__ import annotations

from dataclasses import dataclass

from qbctl.config.urls import PgUrl, RedisUrl


@dataclass(frozen=True)
class Values:
'''


def attribute(setting: Setting) -> str:
    """The name of a setting's attribute in Values: its key in lower case."""
    return setting.key.lower()


def values_module() -> str:
    lines = [VALUES_HEAD]
    for s in SETTINGS:
        lines.append(f"    {attribute(s)}: {KIND_TYPES.get(s.kind, 'str')}\n")
    return "".join(lines)


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parents[2]
    page = root / SETTINGS_PAGE
    targets = {
        root / ".env.example": env_example(),
        page: with_table(page.read_text()),
        root / VALUES_MODULE: values_module(),
    }
    stale = [p for p, text in targets.items() if p.read_text() != text]
    if "--check" in argv:
        for p in stale:
            sys.stderr.write(f"{p} is stale: run python -m qbctl.config.docs\n")
        return 1 if stale else 0
    for p in stale:
        p.write_text(targets[p])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
