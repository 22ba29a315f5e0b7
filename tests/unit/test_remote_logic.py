"""The pure parts of remote engines: context resolution, ssh's failures in words, the engine lock's
staleness, Podman's memory figures, the production profile, the VM's memory in the budget."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from qbctl.checks import budget, vm
from qbctl.config import settings as S
from qbctl.config.sizes import MB
from qbctl.engine import facade as engine
from qbctl.engine import lock
from qbctl.engine.labels import LABEL_LOCK_EXPIRES, LABEL_LOCK_HOLDER, LABEL_LOCK_SINCE
from qbctl.engine.runtime import Runtime
from qbctl.errors import ConfigError, Unavailable
from qbctl.stack import ports
from qbctl.stack.plan import Observed, make_plan
from qbctl.stack.spec import build_stack
from qbctl.transport import ssh, target


def context_store(config: Path, name: str, host: str, tls: bool = False) -> None:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps({"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}}})
    )
    if tls:
        folder = config / "contexts" / "tls" / digest / "docker"
        folder.mkdir(parents=True)
        for f in ("ca", "cert", "key"):
            (folder / f"{f}.pem").write_text("x")


def test_contexts_resolve_as_the_docker_cli_resolves_them(tmp_path):
    cfg = tmp_path / "docker"
    context_store(cfg, "vm", "ssh://deploy@vm.example:2222")
    context_store(cfg, "tls", "tcp://10.0.0.5:2376", tls=True)
    base = {"DOCKER_CONFIG": str(cfg)}
    # No config.json at all (docker-py's ContextAPI fails here): DOCKER_CONTEXT is read from the store.
    t = target.resolve({**base, "DOCKER_CONTEXT": "vm"})
    assert t.kind == "ssh" and t.source == "context vm" and t.host == "vm.example"
    assert t.ssh == target.SshDest("vm.example", "deploy", 2222, "/var/run/docker.sock")
    # DOCKER_HOST wins over DOCKER_CONTEXT; then DOCKER_CONTEXT over config.json's currentContext.
    assert (
        target.resolve({**base, "DOCKER_HOST": "unix:///run/x.sock", "DOCKER_CONTEXT": "vm"}).url
        == "unix:///run/x.sock"
    )
    (cfg / "config.json").write_text(json.dumps({"currentContext": "tls"}))
    t = target.resolve(base)
    assert t.kind == "tcp" and t.tls["ca"].endswith("ca.pem") and t.tls["verify"] is True
    assert target.resolve({**base, "DOCKER_CONTEXT": "vm"}).kind == "ssh"
    (cfg / "config.json").write_text(json.dumps({"currentContext": "default"}))
    assert target.resolve(base) == target.Target(target.LOCAL_URL, "the default")
    with pytest.raises(Unavailable, match="Docker context 'nosuch' does not exist"):
        target.resolve({**base, "DOCKER_CONTEXT": "nosuch"})
    # HOME/.docker when DOCKER_CONFIG is unset
    home = tmp_path / "home"
    context_store(home / ".docker", "vm2", "ssh://vm2")
    assert target.resolve({"HOME": str(home), "DOCKER_CONTEXT": "vm2"}).ssh.host == "vm2"


def test_ssh_urls_leave_port_and_user_to_ssh_config_when_absent():
    assert target.parse_ssh("ssh://vm").args() == ["--", "vm"]  # Port and User from ~/.ssh/config
    assert target.parse_ssh("ssh://me@vm:2200").args() == ["-l", "me", "-p", "2200", "--", "vm"]
    assert target.parse_ssh("ssh://me@vm/run/podman/podman.sock").socket == "/run/podman/podman.sock"
    for bad in ("ssh://", "ssh://vm:99999", "ssh://me:pw@vm"):
        with pytest.raises(Unavailable):
            target.parse_ssh(bad)
    with pytest.raises(Unavailable, match="not an engine address"):
        target.resolve({"DOCKER_HOST": "vm:2375"})


@pytest.mark.parametrize(
    "stderr, words",
    [
        ("Host key verification failed.\r\n", "host key is not known"),
        ("root@vm: Permission denied (publickey).", "login was refused (Permission denied (publickey))"),
        ("ssh: Could not resolve hostname vm: Name or service not known", "unknown host"),
        ("ssh: connect to host vm port 22: Connection refused", "connection refused"),
        ("ssh: connect to host vm port 22: Connection timed out", "no answer"),
        ("kex_exchange_identification: read: Connection reset by peer", "failed: kex_exchange_identification"),
    ],
)
def test_ssh_failures_are_one_line_with_a_hint(stderr, words):
    err = ssh.classify(stderr, target.SshDest("vm"))
    assert err.code == "SSH_FAILED" and err.exit_code == 3 and words in err.message and err.hint
    assert "\n" not in err.message


def test_the_engine_lock_expires_and_a_dead_local_holder_releases_it():
    labels = lock.holder_labels(ttl=60, now=1000.0)
    assert labels[LABEL_LOCK_SINCE] == "1000" and labels[LABEL_LOCK_EXPIRES] == "1060"
    assert not lock.stale(labels, now=1030, pid_alive=lambda pid: True)
    assert lock.stale(labels, now=1061, pid_alive=lambda pid: True)
    assert lock.stale(labels, now=1030, pid_alive=lambda pid: False)  # its process here is gone
    other = {**labels, LABEL_LOCK_HOLDER: "alice@laptop pid 12"}
    assert not lock.stale(other, now=1030, pid_alive=lambda pid: False)  # another machine's: wait for the TTL
    text = lock.describe(other)
    assert text.startswith("alice@laptop pid 12 since 1970-01-01 00:16:40 UTC (expires")


def test_podman_memory_without_cache_figures_and_the_cgroup_reading():
    podman = {"memory_stats": {"usage": 90 * MB, "limit": 300 * MB}}
    m = engine.memory_from_stats(podman)
    assert m.cache_known is False and m.without_cache == 90 * MB
    docker = {
        "memory_stats": {
            "usage": 90 * MB,
            "limit": 300 * MB,
            "stats": {"total_inactive_file": 40 * MB, "total_active_file": 16 * MB},
        }
    }
    assert engine.memory_from_stats(docker).without_cache == 34 * MB
    v1 = "cache 626688\nrss 2985984\ntotal_active_file 1000\ntotal_inactive_file 24\nactive_file 5\ninactive_file 1\n"
    assert engine.cache_from_memstat(v1) == 1024
    assert engine.cache_from_memstat("anon 5\nfile 9\nactive_file 4\ninactive_file 5\n") == 9
    assert engine.cache_from_memstat("nonsense") is None and engine.cache_from_memstat(None) is None
    info = engine.meminfo("MemTotal:        1004680 kB\nMemAvailable:     512000 kB\nHugePages_Total: 0\n")
    assert info == {"MemTotal": 1004680 * 1024, "MemAvailable": 512000 * 1024, "HugePages_Total": 0}


def settings(env=None):
    return S.load(environ=env or {}, cwd=Path("/nonexistent"), project="demo")


def test_a_half_created_container_is_recreated_not_started():
    stack = build_stack(settings())
    spec = stack.get("redis")
    plan = make_plan([spec], {"redis": Observed("redis", "c1", "created", spec.config_hash(), "img")}, {})
    assert str(plan) == "recreate redis: container was created but never started"
    plan = make_plan([spec], {"redis": Observed("redis", "c1", "exited", spec.config_hash(), "img")}, {})
    assert str(plan) == "start    redis: container is exited"


def test_the_production_profile():
    dev = build_stack(settings())
    prod = build_stack(settings({"QBCTL_PROFILE": "production"}))
    assert [s.name for s in prod.services] == ["postgres", "redis"] and prod.profile == "production"
    assert {s.restart for s in prod.services} == {"always"}
    assert {s.restart for s in dev.services} == {"unless-stopped"}
    assert all(p.host_ip == "127.0.0.1" for s in prod.services for p in s.ports)
    assert [s.mem_limit for s in prod.services] == [300 * MB, 150 * MB]
    # The development stack hashes as before profiles existed (no container is recreated by the upgrade),
    # the production one differently (its restart policy).
    assert dev.get("postgres").config_hash() != prod.get("postgres").config_hash()
    assert build_stack(settings(), "production").profile == "production"  # up --profile
    with pytest.raises(ConfigError, match="loopback only"):
        build_stack(settings({"QBCTL_PROFILE": "production", "QBCTL_BIND_ADDRESS": "0.0.0.0"}))
    with pytest.raises(ConfigError, match="QBCTL_PROFILE"):
        settings({"QBCTL_PROFILE": "staging"})


def test_development_hash_is_unchanged_by_the_restart_field():
    import hashlib as h
    from dataclasses import asdict

    spec = build_stack(settings()).get("redis")
    data = asdict(spec)
    data.pop("labels")
    data.pop("restart")
    assert spec.config_hash() == h.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def test_the_vms_own_memory_in_the_budget():
    s = settings()
    result = budget.configured(s)
    vm.apply(result, s, "vm", {"total": 980 * MB, "available": 500 * MB}, {"postgres": 150 * MB, "redis": 30 * MB})
    items = {i.name: i for i in result.items}
    assert items["total"].measured_mb == 980 and "vm has 980MB (MemTotal" in items["total"].derivation
    assert items["total"].ok  # 300 + 150 + 250 + 200 = 900 of 980
    assert items["headroom"].measured_mb == 80
    assert items["os"].measured_mb == 300 and items["os"].ok  # 980 - 500 - 180; within os + backend (450)
    small = budget.configured(s)
    vm.apply(small, s, "vm", {"total": 800 * MB, "available": 100 * MB}, {"postgres": 150 * MB})
    items = {i.name: i for i in small.items}
    assert not items["total"].ok and "900MB" in items["total"].fix
    assert not items["os"].ok and "550MB" in items["os"].fix  # 800 - 100 - 150
    unknown = budget.configured(s)
    vm.apply(unknown, s, "vm", {"total": 980 * MB}, {})
    assert any("MemAvailable" in n for n in unknown.not_measured)


def test_urls_for_people_point_at_the_engines_host(monkeypatch):
    s = settings(
        {
            "DATABASE_URL": "postgresql://u:p%40ss@localhost:5544/db?sslmode=disable",
            "REDIS_URL": "redis://:pw@localhost:6380/2",
        }
    )
    rt = Runtime()
    monkeypatch.setenv("DOCKER_HOST", "ssh://deploy@vm")
    assert rt.reach.user_url(s, "DATABASE_URL") == "postgresql://u:p%40ss@vm:5544/db?sslmode=disable"
    assert rt.reach.user_url(s, "REDIS_URL") == "redis://:pw@vm:6380/2"
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert rt.reach.user_url(s, "REDIS_URL") == "redis://:pw@localhost:6380/2"
    assert rt.reach.endpoint("localhost", 5544) == ("127.0.0.1", 5544)
    assert rt.reach.endpoint("db.example", 5432) == ("db.example", 5432)
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.5:2376")
    assert rt.reach.endpoint("localhost", 5544) == ("10.0.0.5", 5544)
    assert ports.in_use_on_engine(None, "127.0.0.1", 5544, rt=rt) is None
    rt.close()
