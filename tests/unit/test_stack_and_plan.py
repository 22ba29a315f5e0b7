from __future__ import annotations

from pathlib import Path

import pytest

from qbctl.config import settings as S
from qbctl.errors import UsageError
from qbctl.stack.plan import Observed, make_plan
from qbctl.stack.spec import build_stack, select


def stack(env=None):
    return build_stack(S.load(environ=env or {}, cwd=Path("/nonexistent"), project="demo"))


def test_stack_from_default_settings():
    st = stack()
    assert [s.name for s in st.services] == ["postgres", "redis", "adminer", "redis-commander"]
    pg = st.get("postgres")
    assert ("-c", "shared_buffers=128MB") == pg.command[1:3]
    assert "max_connections=10" in pg.command and pg.mem_limit == 300 * 2**20
    assert "max_parallel_workers_per_gather=0" in pg.command and dict(pg.environment)["NO_TS_TUNE"] == "true"
    assert dict(pg.environment)["POSTGRES_USER"] == "qb_user"
    assert pg.volumes == (("demo_pgdata", "/var/lib/postgresql/data"),)
    assert all(p.host_ip == "127.0.0.1" for s in st.services for p in s.ports)
    redis = st.get("redis")
    assert redis.command == ("redis-server", "--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru")
    assert st.container_name("redis") == "demo-redis" and st.network == "demo_default"


def test_ports_follow_the_urls_and_settings():
    st = stack({"DATABASE_URL": "postgresql://u:p@localhost:5544/x", "QBCTL_ADMINER_PORT": "9000"})
    assert st.get("postgres").ports[0].host == 5544 and st.get("postgres").ports[0].setting == "DATABASE_URL"
    assert st.get("adminer").ports[0].host == 9000


def test_redis_password_reaches_server_and_ui():
    st = stack({"REDIS_URL": "redis://:pw123@localhost:6379/2"})
    assert st.get("redis").command[-2:] == ("--requirepass", "pw123")
    assert dict(st.get("redis-commander").environment)["REDIS_HOSTS"] == "local:redis:6379:2:pw123"


def test_remote_database_is_external_and_takes_adminer_with_it():
    st = stack({"DATABASE_URL": "postgresql://u:p@db.example.com:5432/x"})
    assert [s.name for s in st.services] == ["redis", "redis-commander"]
    assert st.external[0][0] == "postgres" and "db.example.com" in st.external[0][1]


def test_select_brings_dependencies_and_drops_uis():
    st = stack()
    assert [s.name for s in select(st, ["adminer"], False)] == ["postgres", "adminer"]
    assert [s.name for s in select(st, None, True)] == ["postgres", "redis"]
    with pytest.raises(UsageError, match="unknown service 'mysql'"):
        select(st, ["mysql"], False)


def test_config_hash_changes_with_settings_only():
    a, b = stack().get("postgres"), stack().get("postgres")
    assert a.config_hash() == b.config_hash()
    c = stack({"POSTGRES_WORK_MEM": "8MB"}).get("postgres")
    assert c.config_hash() != a.config_hash()
    assert stack({"POSTGRES_WORK_MEM": "8MB"}).get("redis").config_hash() == stack().get("redis").config_hash()


def test_plan_as_text():
    st = stack()
    specs = list(st.services)
    ids = {s.image: "sha256:new" for s in specs}
    observed = {
        "postgres": Observed("postgres", "c1", "running", specs[0].config_hash(), "sha256:new", "healthy"),
        "redis": Observed("redis", "c2", "running", "old-hash", "sha256:new"),
        "adminer": Observed("adminer", "c3", "exited", specs[2].config_hash(), "sha256:new"),
    }
    assert str(make_plan(specs, observed, ids)) == (
        "keep     postgres: running, unchanged\n"
        "recreate redis: settings changed\n"
        "start    adminer: container is exited\n"
        "create   redis-commander: no container"
    )
    moved = {**observed, "postgres": Observed("postgres", "c1", "running", specs[0].config_hash(), "sha256:old")}
    assert str(make_plan(specs[:1], moved, ids)) == "recreate postgres: image timescale/timescaledb:latest-pg15 changed"


def test_an_oom_kill_names_the_services_own_memory_setting():
    from qbctl.stack.up import ServiceResult, UpResult, _unready_error

    st = stack()
    dead = ServiceResult(
        "redis-commander", "img", [], "create", False, None, "container was killed: out of memory (exit 137)", 137, True
    )
    result = UpResult("demo", [dead], "", {}, [])
    err = _unready_error(result, 60, {s.name: s.mem_setting for s in st.services})
    assert err.code == "OOM_KILLED" and "QBCTL_REDIS_COMMANDER_MEMORY" in err.hint
