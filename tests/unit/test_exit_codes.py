"""One cause, one exit code: every error code the code raises has one exit code, docs/exit-codes.md's table says it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from qbctl import errors

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "qbctl"


def docs_table() -> dict[str, int]:
    text = (ROOT / "docs" / "exit-codes.md").read_text()
    table = text.split("<!-- exit-codes:start", 1)[1].split("<!-- exit-codes:end -->", 1)[0]
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| (\d+) \|", table, re.M)
    assert rows, "the exit code table of docs/exit-codes.md is missing"
    return {code: int(exit_) for code, exit_ in rows}


def raised_codes() -> dict[str, set[int]]:
    """Every error code the package can report, with the exit code(s) it comes with."""
    classes = {
        name: cls for name, cls in vars(errors).items() if isinstance(cls, type) and issubclass(cls, errors.QbctlError)
    }
    found: dict[str, set[int]] = {}
    for cls in classes.values():
        found.setdefault(cls.code, set()).add(int(cls.exit_code))
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if name not in classes:
                continue
            code = next(
                (k.value.value for k in node.keywords if k.arg == "code" and isinstance(k.value, ast.Constant)),
                classes[name].code,
            )
            found.setdefault(code, set()).add(int(classes[name].exit_code))
    return found


def test_each_code_has_one_exit_code():
    mixed = {code: exits for code, exits in raised_codes().items() if len(exits) > 1}
    assert not mixed, f"one cause, several exit codes: {mixed}"


def test_the_docs_table_lists_every_code_with_its_exit_code():
    table = docs_table()
    raised = {code: exits.pop() for code, exits in raised_codes().items()}
    stale = {c: e for c, e in raised.items() if table.get(c) != e}
    assert stale == {}, "the exit code table of docs/exit-codes.md is stale"
    assert set(table) - set(raised) == set(), "docs/exit-codes.md lists codes the code no longer has"


def test_the_exit_codes_are_the_documented_ones():
    assert {int(e) for e in errors.Exit} == {0, 1, 2, 3, 4, 70, 130}
    assert set(docs_table().values()) <= {1, 2, 3, 4, 70, 130}


def run_in_process(argv: list[str]) -> tuple[int, dict]:
    import io
    import json

    from qbctl.cli import main
    from qbctl.context import AppState
    from qbctl.output import Output

    stdout = io.StringIO()
    code = main(argv, AppState(out=Output(stdout=stdout, stderr=io.StringIO(), environ={})))
    return code, json.loads(stdout.getvalue())


def test_a_server_that_goes_away_mid_command_is_named_never_unexpected(monkeypatch, tmp_path):
    import psycopg

    from qbctl.db import status as dbstatus

    monkeypatch.chdir(tmp_path)
    for key in ("DATABASE_URL", "QBCTL_PROJECT", "QBCTL_PROJECT_DIR"):
        monkeypatch.delenv(key, raising=False)
    cases = {
        "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally": (
            "SERVER_KILLED",
            "killed",
        ),
        "terminating connection due to administrator command": ("DATABASE_UNAVAILABLE", "connection was lost"),
    }
    for text, (code, words) in cases.items():

        def broken(*_a, text=text, **_k):
            raise psycopg.OperationalError(text)

        monkeypatch.setattr(dbstatus, "status", broken)
        exit_code, out = run_in_process(["db", "status", "--json"])
        assert (exit_code, out["error"]["code"]) == (3, code) and words in out["error"]["message"]
        assert "db status" in out["error"]["message"]


def test_answering_no_at_the_prompt_says_nothing_was_done(tmp_path):
    """`qbctl reset` on a terminal, answered n: one line, exit 1 (NOT_CONFIRMED); nothing is touched."""
    import os
    import pty
    import subprocess
    import sys

    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QBCTL_")}
    env.update(
        {"QBCTL_PROJECT": "qbtest-prompt", "DOCKER_HOST": "unix:///nonexistent/docker.sock", "PYTHONPATH": str(ROOT)}
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "qbctl", "reset"],
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
        text=True,
    )
    os.close(secondary)
    os.write(primary, b"n\n")
    out, err = proc.communicate(timeout=30)
    os.close(primary)
    assert proc.returncode == 1, err
    assert "This deletes every container and volume of project 'qbtest-prompt'" in err
    assert err.rstrip().endswith("error: nothing was done: not confirmed"), err
