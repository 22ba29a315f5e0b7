"""The command reference (docs/commands/, the README's list of commands) is made from the Typer app: a page
per command, checked here like the settings table, so that it cannot drift from the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from qbctl import reference

ROOT = Path(__file__).resolve().parents[2]


def test_every_generated_part_is_current():
    wanted, gone = reference.targets(ROOT)
    stale = [str(p.relative_to(ROOT)) for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    assert stale == [], f"stale or missing: run python -m qbctl.reference ({stale})"
    assert gone == [], f"pages of commands that are gone: {gone}"


def test_every_command_has_a_page_and_a_line_in_the_readme():
    """Every command the Typer app has, walked from its root (a group's default command under the group)."""
    readme = (ROOT / "README.md").read_text()
    for cmd in reference.commands():
        page = ROOT / reference.FOLDER / cmd.page
        assert page.exists(), cmd.name
        assert f"[`{cmd.name}`](docs/commands/{cmd.page})" in readme, cmd.name
    names = {c.name for c in reference.commands()}
    assert {"qbctl up", "qbctl db migrate", "qbctl snapshot", "qbctl snapshot list", "qbctl ci setup"} <= names
    assert "qbctl snapshot take" not in names  # the default command is documented under its group's name


def test_a_page_shows_what_help_shows():
    import typer.main

    from qbctl.cli import app

    migrate = next(c for c in reference.commands() if c.path == ("db", "migrate"))
    click_cmd = typer.main.get_command(app).commands["db"].commands["migrate"]
    flags = {o for p in click_cmd.params for o in p.opts if o.startswith("--") and o != "--help"}
    page = (ROOT / reference.FOLDER / migrate.page).read_text()
    block = page.split(reference.START, 1)[1].split(reference.END, 1)[0]
    assert flags and [f for f in flags if f not in block] == []
    assert migrate.summary in block and f"```\n{migrate.usage}\n```" in block


def test_a_stale_page_is_found_and_rewritten(tmp_path):
    """--check fails on a hand edit inside a generated part (and on a page of no command); a run rewrites
    the part and keeps the hand-written text around it."""
    (tmp_path / "docs" / "commands").mkdir(parents=True)
    (tmp_path / "README.md").write_text("# qbctl\n\nintro\n")
    wanted, _ = reference.targets(tmp_path)
    for path, text in wanted.items():
        path.write_text(text)
    page = tmp_path / reference.FOLDER / "up.md"
    page.write_text(page.read_text().replace("Start the stack", "Start a stack") + "\nhand-written notes\n")
    (tmp_path / reference.FOLDER / "gone.md").write_text("# gone\n")
    wanted, gone = reference.targets(tmp_path)
    assert [p.name for p, t in wanted.items() if p.read_text() != t] == ["up.md"]
    assert [p.name for p in gone] == ["gone.md"]
    assert "Start the stack" in wanted[page] and wanted[page].endswith("\nhand-written notes\n")


def test_the_check_passes_on_this_checkout():
    """`python -m qbctl.reference --check` (.ci/run runs it) exits 0 here, 1 when a part is stale (above)."""
    proc = subprocess.run(
        [sys.executable, "-m", "qbctl.reference", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
