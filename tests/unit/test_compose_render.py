from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qbctl.config import settings as S
from qbctl.stack import compose_file

ROOT = Path(__file__).resolve().parents[2]


def test_committed_compose_file_is_current_for_default_settings():
    s = S.load(environ={}, cwd=ROOT)
    assert compose_file.write(s, check=True).ok


def test_render_matches_the_stack_and_hides_the_password(tmp_path):
    (tmp_path / "sql" / "schema").mkdir(parents=True)
    s = S.load(environ={"DATABASE_URL": "postgresql://u:topsecret@localhost:5544/db"}, cwd=tmp_path)
    text = compose_file.render(s)
    assert "topsecret" not in text
    assert "- 127.0.0.1:${QB_POSTGRES_PORT:-5544}:5432" in text and "mem_limit: 300m" in text
    assert "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD" in text  # not the default password: never written
    assert "--maxmemory" in text and "shared_buffers=128MB" in text
    missing = compose_file.write(s, check=True)
    assert missing.exit_code == 1 and "is missing" in missing.error.message
    written = compose_file.write(s, check=False)
    assert written.written and written.path == str(tmp_path / "compose" / "docker-compose.dev.yml")
    assert compose_file.write(s, check=True).ok
    s2 = S.load(environ={"DATABASE_URL": "postgresql://u:topsecret@localhost:5545/db"}, cwd=tmp_path)
    stale = compose_file.write(s2, check=True)
    assert stale.error.code == "DRIFT" and "out of date" in stale.error.message


@pytest.mark.parametrize(
    "value", ["Null", "NO", "True", "1e3", "0x1F", "yes", "1.5", "~", "on", "-", "a: b", "${X:?y z}", "#x", "12:30"]
)
def test_yaml_scalars_keep_their_type(value):
    """A database or user named like a YAML keyword stays a string in the compose file."""
    text = compose_file.to_yaml({"environment": {"POSTGRES_DB": value}, "command": [value]})
    assert yaml.safe_load(text) == {"environment": {"POSTGRES_DB": value}, "command": [value]}


def test_yaml_layout_is_kept():
    assert compose_file.to_yaml({"a": {"b": ["x", "y"], "c": {}}}) == "a:\n  b:\n    - x\n    - y\n  c: {}\n"
