from __future__ import annotations

import json
import shutil

from qbctl.config.settings import SETTINGS
from tests.helpers import ROOT, qbctl


def env_for(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("QBCTL_")}
    return env


def test_env_check_reports_unknown_missing_and_bad(tmp_path):
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")
    (tmp_path / "sql" / "schema").mkdir(parents=True)
    (tmp_path / ".env").write_text(
        "DATABASE_URL=postgresql://u:hunter22@localhost:5432/db\nREDIS_MAX_MEMORY=lots\nREDIS_MAXMEMORY=100mb\n"
    )
    proc = qbctl("env", "check", "--json", env=env_for(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    result = json.loads(proc.stdout)
    assert result["invalid"] == [
        {"key": "REDIS_MAX_MEMORY", "value": "lots", "problem": "expected a size such as 128MB, 150mb or 1GB"}
    ]
    assert result["unknown"] == [{"key": "REDIS_MAXMEMORY", "did_you_mean": "REDIS_MAX_MEMORY"}]
    assert result["defaults"] == len(SETTINGS) - 2
    assert "hunter22" not in proc.stdout
    (tmp_path / ".env").write_text("REDIS_MAXMEMORY=100mb\n")
    typo = qbctl("env", "check", env=env_for(tmp_path), cwd=tmp_path)
    assert typo.returncode == 1 and "unknown     REDIS_MAXMEMORY (did you mean REDIS_MAX_MEMORY?)" in typo.stdout
    warned = qbctl("config", "show", env=env_for(tmp_path), cwd=tmp_path)  # every command warns about it
    assert warned.returncode == 0
    assert "unknown key REDIS_MAXMEMORY, ignored; did you mean REDIS_MAX_MEMORY?" in warned.stderr
    (tmp_path / ".env").write_text("REDIS_MAX_MEMORY=100mb\n")
    ok = qbctl("env", "check", env=env_for(tmp_path), cwd=tmp_path)
    assert ok.returncode == 0 and "ok" in ok.stdout and "keep their defaults" in ok.stdout
    assert "missing" not in ok.stdout


def test_env_check_without_env_file(tmp_path):
    proc = qbctl("env", "check", env=env_for(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0 and "every setting has its default" in proc.stdout  # none is needed
    named = qbctl("--env-file", "other.env", "env", "check", env=env_for(tmp_path), cwd=tmp_path)
    assert named.returncode == 2 and "other.env does not exist" in named.stderr


def test_bad_env_value_is_one_line_and_exit_2_for_every_command(tmp_path):
    (tmp_path / ".env").write_text("QBCTL_ADMINER_PORT=99999\n")
    for args in (["up"], ["status"], ["health"], ["budget"], ["config", "show"], ["db", "migrate"]):
        proc = qbctl(*args, env=env_for(tmp_path), cwd=tmp_path)
        assert proc.returncode == 2, args
        assert proc.stderr.splitlines()[0] == (
            "error: QBCTL_ADMINER_PORT='99999' (from .env): expected a whole number from 1 to 65535"
        ), proc.stderr
        assert "Traceback" not in proc.stderr


def test_usage_errors_exit_2(tmp_path):
    for args in (["up", "--timeout", "abc"], ["nope"], ["up", "mysql"], ["logs"]):
        proc = qbctl(*args, env=env_for(tmp_path), cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
