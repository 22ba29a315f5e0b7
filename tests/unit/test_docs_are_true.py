"""The README and .env.example list every setting, with the defaults the code uses."""
from __future__ import annotations

from pathlib import Path

from dotenv import dotenv_values

from qbctl.config.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_lists_every_setting_with_its_default():
    example = dotenv_values(ROOT / ".env.example")
    assert {k: v for k, v in example.items()} == {s.key: s.default for s in SETTINGS}


def test_readme_names_every_setting_and_command():
    readme = (ROOT / "README.md").read_text()
    missing = [s.key for s in SETTINGS if f"`{s.key}`" not in readme]
    assert not missing, f"README lacks {missing}"
    for command in ("qbctl up", "qbctl down", "qbctl reset", "qbctl status", "qbctl logs", "qbctl config show",
                    "qbctl compose render"):
        assert command in readme, command
