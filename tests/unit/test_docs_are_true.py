"""The docs and .env.example say what the code does: made from the settings table and the Typer app, checked here."""

from __future__ import annotations

from pathlib import Path

from dotenv import dotenv_values

from qbctl.config import docs
from qbctl.config.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_is_made_from_the_settings_table():
    assert (ROOT / ".env.example").read_text() == docs.env_example(), "stale: run python -m qbctl.config.docs"
    assert dotenv_values(ROOT / ".env.example") == {s.key: s.default for s in SETTINGS}


def test_the_settings_page_table_is_made_from_the_settings_table():
    page = (ROOT / docs.SETTINGS_PAGE).read_text()
    assert docs.with_table(page) == page, "stale: run python -m qbctl.config.docs"
    assert docs.settings_table() in page


def test_no_file_points_outside_the_repository():
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    outside = ["../" + "shared", "DESIGN" + ".md"]
    for name in tracked:
        path = ROOT / name
        if path.suffix in (".py", ".md", ".sh", ".toml", ".yml") and path.exists():
            text = path.read_text(errors="replace")
            assert not [o for o in outside if o in text], f"{name} points outside the repository"
