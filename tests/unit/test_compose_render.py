from __future__ import annotations

from pathlib import Path

import pytest

from qbctl.stack import compose_file
from qbctl.config import settings as S
from qbctl.errors import CheckFailed

ROOT = Path(__file__).resolve().parents[2]


def test_committed_compose_file_is_current_for_default_settings():
    s = S.load(environ={}, cwd=ROOT)
    compose_file.write(s, check=True)  # raises CheckFailed on drift


def test_render_matches_the_stack_and_hides_the_password(tmp_path):
    (tmp_path / "sql" / "schema").mkdir(parents=True)
    s = S.load(environ={"DATABASE_URL": "postgresql://u:topsecret@localhost:5544/db"}, cwd=tmp_path)
    text = compose_file.render(s)
    assert "topsecret" not in text
    assert "- 127.0.0.1:5544:5432" in text and "mem_limit: 300m" in text
    assert "--maxmemory" in text and "shared_buffers=128MB" in text
    with pytest.raises(CheckFailed, match="is missing"):
        compose_file.write(s, check=True)
    path, changed = compose_file.write(s, check=False)
    assert changed and path == tmp_path / "compose" / "docker-compose.dev.yml"
    compose_file.write(s, check=True)
    s2 = S.load(environ={"DATABASE_URL": "postgresql://u:topsecret@localhost:5545/db"}, cwd=tmp_path)
    with pytest.raises(CheckFailed, match="out of date"):
        compose_file.write(s2, check=True)


def test_yaml_scalars_are_quoted_when_needed():
    assert compose_file._scalar("yes") == '"yes"'
    assert compose_file._scalar("1.5") == '"1.5"'
    assert compose_file._scalar("${X:?y z}").startswith('"')
    assert compose_file._scalar("postgres") == "postgres"
