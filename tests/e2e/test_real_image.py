"""The stack on a postgres image that starts as timescale/timescaledb:latest-pg15 does (tests/images: the
extension created in postgres, template1 and POSTGRES_DB at the first start, so two TimescaleDB schedulers
run, one already when `db migrate` creates the policies; the telemetry line; the tune step NO_TS_TUNE skips;
the postgres user as uid 70; VOLUME /var/lib/postgresql/data). The README's first-day order is green every
time; seed, snapshot and restore, and db reset, leave a healthy stack; the worker arithmetic counts the
schedulers that run; temporary containers leave no anonymous volume."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest

from tests.e2e.test_snapshots import ok
from tests.helpers import PASSWORD, RUN, RUN_LABEL, no_traceback, qbctl, standin

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("needs_standin_timescaledb")]
# Small, but long enough for seed's refresh to meet the policies' first runs (they start seconds after
# `db migrate`): with seed's pause of before (which matched no job), a quarter of these rounds failed here.
SEED = ("db", "seed", "--symbols", "3", "--days", "7")


def url(env, db=None) -> str:
    u = env["DATABASE_URL"].replace("localhost", "127.0.0.1")
    return u.rsplit("/", 1)[0] + "/" + db if db else u


def container(docker_client, env, service="postgres"):
    return docker_client.containers.get(f"{env['QBCTL_PROJECT']}-{service}")


def healthy(env, cwd) -> dict:
    """`health` green, every check: what it said otherwise is the assertion's message."""
    proc = qbctl("health", "--json", env=env, cwd=cwd)
    no_traceback(proc)
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert proc.returncode == 0, {n: c["detail"] for n, c in checks.items() if not c["ok"]}
    return checks


def schedulers(env, want: int = 2, seconds: float = 30) -> list[str]:
    """The databases a TimescaleDB scheduler runs for, once `want` of them run (a server just started
    starts them within a second or two)."""
    deadline = time.monotonic() + seconds
    while True:
        with psycopg.connect(url(env, "postgres"), autocommit=True) as conn:
            found = sorted(
                d
                for (d,) in conn.execute(
                    "SELECT datname FROM pg_stat_activity"
                    " WHERE backend_type = 'TimescaleDB Background Worker Scheduler'"
                )
            )
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def first_day(env, cwd) -> None:
    """The README's first-day order, back to back."""
    for step in (("up",), ("db", "migrate"), SEED):
        proc = qbctl(*step, env=env, cwd=cwd, timeout=300)
        no_traceback(proc)
        assert proc.returncode == 0, proc.stdout + proc.stderr + what_runs(env, cwd)


def what_runs(env, cwd) -> str:
    """For a failure's message: the stack's status and its containers' last log lines."""
    import docker

    out = "\n--- qbctl status\n" + qbctl("status", env=env, cwd=cwd).stdout
    for c in docker.from_env().containers.list(all=True, filters={"label": f"io.qbctl.project={env['QBCTL_PROJECT']}"}):
        out += f"\n--- {c.name} {c.status} {c.attrs['State']}\n" + c.logs(tail=15).decode(errors="replace")
    return out


def test_the_postgres_image_starts_as_the_timescaledb_image_does(project_env, tmp_path, docker_client):
    env = project_env
    ok(qbctl("up", "postgres", env=env, cwd=tmp_path))
    pg = container(docker_client, env)
    config = docker_client.images.get(standin("postgres")).attrs["Config"]
    assert "/var/lib/postgresql/data" in config["Volumes"] and config["StopSignal"] == "SIGINT"
    out = pg.exec_run(
        ["sh", "-c", 'stat -c %u "$PGDATA"; grep -E "^Uid:" /proc/1/status; cat "$PGDATA/postgresql.conf"']
    ).output.decode()
    owner, uid_line, conf = out.split("\n", 2)
    assert owner == "70" and uid_line.split()[1] == "70"  # the data and the server: the postgres user, uid 70
    assert "timescaledb.telemetry_level=basic" in conf  # the image's line; qbctl's command line says off
    assert "timescaledb_tune" not in conf and "last_tuned" not in conf  # qbctl sets NO_TS_TUNE
    with psycopg.connect(url(env, "postgres"), autocommit=True) as conn:
        assert conn.execute("SHOW timescaledb.telemetry_level").fetchone()[0] == "off"
        assert conn.execute("SHOW timescaledb.max_background_workers").fetchone()[0] == "5"
    assert schedulers(env) == ["postgres", "qb_trading_dev"]  # running before any `db migrate`
    for db in ("postgres", "template1", "qb_trading_dev"):
        with psycopg.connect(url(env, db), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()[0] == 1

    # The tune step is the image's: without NO_TS_TUNE it writes settings sized from the memory limit.
    bare = docker_client.containers.run(
        standin("postgres"),
        detach=True,
        mem_limit="256m",
        environment={"POSTGRES_PASSWORD": PASSWORD},
        name=f"{env['QBCTL_PROJECT']}-bare",
        labels={RUN_LABEL: RUN},
    )
    try:
        deadline = time.monotonic() + 120
        while b"init process complete" not in bare.logs():
            assert time.monotonic() < deadline, bare.logs()[-2000:]
            time.sleep(0.5)
        tuned = bare.exec_run(["sh", "-c", 'cat "$PGDATA/postgresql.conf"']).output.decode()
    finally:
        bare.remove(force=True, v=True)
    assert "shared_buffers = 65536kB" in tuned and "timescaledb.max_background_workers = 16" in tuned


@pytest.mark.parametrize("attempt", range(1, 11))
def test_the_readme_first_day_order_is_green_every_time(project_env, tmp_path, attempt):
    # `up`, `db migrate`, `db seed`, `health` back to back, each time on a fresh project: the scheduler of the
    # database runs from the first start, so the policies' first runs start while seed refreshes the bars.
    env = project_env
    first_day(env, tmp_path)
    checks = healthy(env, tmp_path)
    assert "2 schedulers (postgres, qb_trading_dev) + 2 job slots" in checks["timescaledb jobs"]["detail"]
    ok(qbctl("db", "status", "--exit-code", env=env, cwd=tmp_path))


@pytest.mark.parametrize("form", ["physical", "logical"])
def test_seed_snapshot_restore_leaves_a_healthy_stack(project_env, tmp_path, form):
    env = project_env
    first_day(env, tmp_path)
    ok(qbctl("snapshot", "s1", env=env, cwd=tmp_path, timeout=300))
    args = ("--logical",) if form == "logical" else ()
    restored = json.loads(
        ok(qbctl("restore", "s1", "--yes", *args, "--json", env=env, cwd=tmp_path, timeout=300)).stdout
    )
    assert restored["postgres"]["form"] == form, restored["notes"]
    healthy(env, tmp_path)
    ok(qbctl("db", "status", "--exit-code", env=env, cwd=tmp_path))
    with psycopg.connect(url(env), autocommit=True) as conn:
        # Nothing restored stands for a refresh in progress, and every policy is scheduled, none held.
        assert (
            conn.execute(
                "SELECT count(*) FROM _timescaledb_catalog.continuous_aggs_jobs_refresh_ranges"
                " WHERE created_at < pg_postmaster_start_time()"
            ).fetchone()[0]
            == 0
        )
        assert (
            conn.execute(
                "SELECT count(*) FROM timescaledb_information.job_stats s JOIN"
                " timescaledb_information.jobs j USING (job_id) WHERE j.job_id >= 1000 AND"
                " (NOT j.scheduled OR s.next_start = 'infinity')"
            ).fetchone()[0]
            == 0
        )


def test_db_reset_leaves_a_healthy_stack(project_env, tmp_path):
    env = project_env
    first_day(env, tmp_path)
    ok(qbctl("db", "reset", "--yes", "--no-snapshot", env=env, cwd=tmp_path, timeout=300))
    healthy(env, tmp_path)
    ok(qbctl("db", "seed", "--symbols", "1", "--days", "2", env=env, cwd=tmp_path))
    healthy(env, tmp_path)


def test_budget_and_health_count_the_schedulers_that_run(project_env, tmp_path):
    env = project_env
    ok(qbctl("up", "postgres", "redis", env=env, cwd=tmp_path))
    ok(qbctl("db", "migrate", env=env, cwd=tmp_path))
    report = json.loads(qbctl("budget", "--json", env=env, cwd=tmp_path).stdout)
    pg = {i["name"]: i for i in report["items"]}["postgres"]
    jobs = {t["name"]: t["text"] for t in pg["terms"]}["TimescaleDB jobs"]
    assert jobs == "max_background_workers 5 - the launcher - 2 schedulers = 2 job slots x a session"
    assert "from the running server, what they do not decide" in pg["derivation"]  # the schedulers among them
    checks = healthy(env, tmp_path)
    data = checks["timescaledb jobs"]["data"]
    assert (data["workers"], data["schedulers"], data["job_slots"]) == ("5", ["postgres", "qb_trading_dev"], 2)

    # With 3 workers the launcher and the two schedulers take them all: said, with the setting that fixes it.
    starved = {**env, "TIMESCALEDB_MAX_BACKGROUND_WORKERS": "3"}
    ok(qbctl("up", "postgres", "redis", env=starved, cwd=tmp_path))
    assert schedulers(env) == ["postgres", "qb_trading_dev"]
    proc = qbctl("health", "--json", env=starved, cwd=tmp_path)
    check = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}["timescaledb jobs"]
    assert proc.returncode == 1 and not check["ok"]
    assert (
        "no background worker is left for jobs: timescaledb.max_background_workers 3 = the launcher + 2 "
        "schedulers (postgres, qb_trading_dev) + 0 job slots" in check["detail"]
    )
    assert "raise TIMESCALEDB_MAX_BACKGROUND_WORKERS to 4 or more" in check["detail"]


def test_temporary_containers_leave_no_anonymous_volume(project_env, tmp_path, docker_client):
    # A volume made by an older qbctl records no PostgreSQL major: `upgrade` reads PG_VERSION with a
    # temporary container that mounts it at /data, so the image's VOLUME /var/lib/postgresql/data gets an
    # anonymous volume of its own, which must go with the container.
    env = project_env
    project = env["QBCTL_PROJECT"]
    docker_client.volumes.create(
        f"{project}_pgdata", labels={"io.qbctl.project": project, "io.qbctl.service": "postgres"}
    )
    ok(qbctl("up", "postgres", env=env, cwd=tmp_path))
    ok(qbctl("down", env=env, cwd=tmp_path))
    # The engine keeps few past events, and other stacks make many: watch them as they come.
    stream = docker_client.events(decode=True, filters={"type": ["container", "volume"]})
    events: list[dict] = []

    def watch():
        try:
            for event in stream:
                events.append(event)
        except Exception:  # noqa: BLE001 - the stream closed under it: the end of watching
            pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    new = {**env, "QBCTL_POSTGRES_IMAGE": standin("postgres17")}
    proc = qbctl("upgrade", "--json", env=new, cwd=tmp_path, input="")
    no_traceback(proc)
    assert json.loads(proc.stdout)["error"]["code"] == "FROM_IMAGE_NEEDED"  # after reading PG_VERSION: 15
    ok(qbctl("snapshot", "stopped", env=env, cwd=tmp_path))  # a temporary server on the stopped stack's volume
    time.sleep(1)  # the last events on their way
    stream.close()
    watcher.join(timeout=10)
    ours = {
        e["id"]
        for e in events
        if e.get("Type") == "container"
        and e.get("Action") == "create"
        and e["Actor"]["Attributes"].get("io.qbctl.project") == project
    }
    mounted = {
        e["Actor"]["ID"]
        for e in events
        if e.get("Type") == "volume"
        and e.get("Action") == "mount"
        and e["Actor"]["Attributes"].get("container") in ours
    }
    named = {v.name for v in docker_client.volumes.list(filters={"label": f"io.qbctl.project={project}"})}
    anonymous = mounted - named
    assert ours and anonymous, events  # the upgrade's reader had one
    left = {v.name for v in docker_client.volumes.list()} & anonymous
    assert not left
