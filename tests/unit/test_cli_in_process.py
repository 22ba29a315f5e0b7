"""The command line in-process: `cli.main(argv)` with an AppState whose Output writes to StringIO, for commands
where a new process adds nothing (no engine, no server): exit codes, one JSON object, one error line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from qbctl import cli
from qbctl.context import AppState
from qbctl.output import Output


@pytest.fixture
def run(monkeypatch, tmp_path):
    """run(*argv, files={name: text}) -> (exit code, stdout, stderr), in tmp_path, with no QBCTL_ setting set."""
    import os

    for key in [k for k in os.environ if k.startswith(("QBCTL_", "DATABASE_URL", "REDIS_URL", "POSTGRES_", "REDIS_"))]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)

    def call(*argv: str, files: dict[str, str] | None = None, env: dict[str, str] | None = None):
        for name, text in (files or {}).items():
            path = Path(tmp_path, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(list(argv), AppState(out=Output(stdout=out, stderr=err, environ={"NO_COLOR": "1"})))
        return code, out.getvalue(), err.getvalue()

    return call


def test_config_show_json_is_one_object_with_the_password_masked(run):
    code, out, err = run(
        "config",
        "show",
        "--json",
        files={".env": "DATABASE_URL=postgresql://qb_user:hunter2-secret@localhost:5432/qb\n"},
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["ok"] is True and "hunter2-secret" not in out + err
    assert {r["key"]: r["value"] for r in data["settings"]}[
        "DATABASE_URL"
    ] == "postgresql://qb_user:***@localhost:5432/qb"


def test_env_check_names_a_misspelt_key_and_its_fix(run):
    code, out, err = run("env", "check", files={".env": "POSTGRES_SHARED_BUFFER=64MB\n"})
    assert code == 1, out + err
    assert "unknown     POSTGRES_SHARED_BUFFER (did you mean POSTGRES_SHARED_BUFFERS?)" in out
    assert "Traceback" not in out + err


def test_up_outside_a_project_refuses_in_one_line_before_any_engine_call(run, tmp_path):
    code, out, err = run("up", "--json")
    assert code == 2
    error = json.loads(out)["error"]
    assert error["code"] == "NOT_A_PROJECT" and str(tmp_path) in error["message"]
    code, out, err = run("up")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1  # one line, the fix in it
    assert "--project-dir DIR or --project NAME" in err


def test_a_bad_option_value_is_a_usage_error_in_words(run):
    code, out, err = run("up", "--profile", "staging", "--json", env={"QBCTL_PROJECT": "qbtest-inprocess"})
    assert code == 2
    assert json.loads(out)["error"]["message"] == "--profile staging: expected one of development, production"


def test_an_unknown_command_is_click_s_usage_error_with_exit_2(run, capsys):
    code, out, err = run("upp")
    assert code == 2
    assert "No such command 'upp'" in capsys.readouterr().err  # click writes its usage errors itself


def test_only_the_plain_forms_of_up_are_tried_before_typer_loads():
    from qbctl import launch
    from qbctl.stack.spec import SERVICES

    assert launch.SERVICES == SERVICES
    for argv in (["up"], ["up", "--json"], ["up", "--no-ui", "postgres", "redis"], ["up", "adminer", "--json"]):
        assert launch.quick_form(argv), argv
    for argv in (
        [],
        ["status"],
        ["up", "--timeout", "3"],
        ["up", "--profile", "production"],
        ["-p", "x", "up"],
        ["up", "--help"],
        ["up", "-h"],
        ["up", "mysql"],
        ["up", "--jsonx"],
        ["--project-dir", ".", "up"],
    ):
        assert not launch.quick_form(argv), argv
