"""The pytest plugin's cost per test, beside the two ways a suite gets a clean database without it:
`python bench/testdb.py [--runs N] [--tests N]`.

On a stack of its own (`qbctl up postgres redis`, the stand-in images where the real ones cannot be
pulled: TimescaleDB with its scheduler on), a backend folder whose tests each do the same small work
(connect, insert an order, count the orders) with their database from:

- `without`: one database shared by every test, nothing cleaned (the floor: what a test costs alone);
- `qb_database_url`: the plugin, a clone of the template per test (FILE_COPY, and WAL_LOG beside it);
- `create + migrate`: CREATE DATABASE and qbctl's migrate (in-process, no CLI start-up) per test;
- `truncate`: one migrated database, every table of the schema truncated after each test.

Each variant runs as a pytest session of N tests (100; 20 for create + migrate, whose cost per test is
seconds), the variants in a shuffled order each round. A test's time is its whole protocol (setup, call,
teardown) measured by a hook in the folder's conftest.py; the cost per test of a variant is its median
test time less the `without` median of the same round. Then `-n 4` wall time of 100 tests, with and
without the plugin. The machine's load average is recorded with each session: this machine is shared.
Results: bench/testdb.json and bench/testdb.md (docs/benchmarks.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Outside the repository: an installed qbctl carries sql/ (a second copy of each file in the tree).
VENV = Path(tempfile.gettempdir()) / "qbctl-bench-testdb-venv"
sys.path.insert(0, str(ROOT))

from bench.run import free_port  # noqa: E402

CONFTEST = '''\
import json
import os
import time
import uuid

import psycopg
import pytest

TIMES = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    started = time.perf_counter()
    yield
    TIMES.append(time.perf_counter() - started)


def pytest_sessionfinish(session):
    with open(os.environ["QB_BENCH_OUT"], "a") as f:
        f.write(json.dumps(TIMES) + "\\n")


@pytest.fixture
def migrated_url():
    """CREATE DATABASE + qbctl's migrate for this test (in-process), dropped after it."""
    from qbctl.config import settings
    from qbctl.db import connect, migrate, testdb
    from qbctl.engine.runtime import Runtime

    s = settings.load()
    name = "bench_m_" + uuid.uuid4().hex[:12]
    with Runtime() as rt:
        with connect.connect(s, rt=rt) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        result = migrate.migrate(testdb.with_database(s, name), migrate.MigrateOptions(wait=0), rt=rt)
        assert result.error is None, result.error
        yield testdb.url(s, name, rt=rt)
        with connect.connect(s, rt=rt) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def truncated_url(qb_session_database_url):
    """One migrated database for the session; every table of the schema truncated after each test."""
    yield qb_session_database_url
    with psycopg.connect(qb_session_database_url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables"
                                             " WHERE schemaname = 'public'")]
        conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
'''

TESTS = """\
import os

import psycopg
import pytest

N = int(os.environ["QB_BENCH_N"])


def work(url):
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO orders (symbol, side, order_type, quantity, strategy)"
                     " VALUES ('005930', 'buy', 'market', 10, 'bench')")
        conn.execute("SELECT count(*) FROM orders").fetchone()


@pytest.mark.parametrize("n", range(N))
def test_without(qb_session_database_url, n):
    work(qb_session_database_url)


@pytest.mark.parametrize("n", range(N))
def test_clone(qb_database_url, n):
    work(qb_database_url)


@pytest.mark.parametrize("n", range(N))
def test_migrate(migrated_url, n):
    work(migrated_url)


@pytest.mark.parametrize("n", range(N))
def test_truncate(truncated_url, n):
    work(truncated_url)
"""

VARIANTS = {  # name: (-k, extra pytest arguments)
    "without (shared database, the floor)": ("test_without", []),
    "qb_database_url (FILE_COPY)": ("test_clone", ["-o", "qb_clone_strategy=FILE_COPY"]),
    "qb_database_url (WAL_LOG)": ("test_clone", ["-o", "qb_clone_strategy=WAL_LOG"]),
    "CREATE DATABASE + db migrate": ("test_migrate", []),
    "truncate every table": ("test_truncate", []),
}


def sh(*cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return proc


class TestdbBench:
    def __init__(self, runs: int, tests: int):
        self.runs, self.tests = runs, tests
        self.tmp = Path(tempfile.mkdtemp(prefix="qbctl-bench-testdb-"))
        self.folder = self.tmp / "backend"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("QBCTL_", "DATABASE_URL", "REDIS_URL", "PYTHON", "VIRTUAL_ENV", "PYTEST"))
        }
        self.env.update(
            {
                "QBCTL_PROJECT": "qbbench-testdb",
                "NO_COLOR": "1",
                "DATABASE_URL": f"postgresql://qb_user:qb_pass@localhost:{free_port()}/qb_trading_dev",
                "REDIS_URL": f"redis://localhost:{free_port()}/0",
                "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}",
            }
        )
        for key, image in (("QBCTL_POSTGRES_IMAGE", "postgres"), ("QBCTL_REDIS_IMAGE", "redis")):
            if os.environ.get(key) or not _pullable():
                self.env[key] = os.environ.get(key) or f"qbctl-standin/{image}:test"
        self.results: dict[str, dict] = {}
        self.retries = 0

    def setup(self) -> None:
        if not VENV.exists():
            sh(sys.executable, "-m", "venv", str(VENV))
        sh(
            str(VENV / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            str(ROOT),
            "pytest",
            "pytest-xdist",
        )
        (self.folder / "tests").mkdir(parents=True)
        (self.folder / "pyproject.toml").write_text("[tool.qbctl]\n")
        (self.folder / "tests" / "conftest.py").write_text(CONFTEST)
        (self.folder / "tests" / "test_bench.py").write_text(TESTS)
        sh(str(VENV / "bin" / "qbctl"), "up", "postgres", "redis", "--no-ui", env=self.env, cwd=self.folder)

    def session(self, name: str, k: str, extra: list[str], n: int, workers: int = 0) -> dict:
        out = self.tmp / "times.jsonl"
        out.unlink(missing_ok=True)
        args = ["pytest", "-q", "-p", "no:cacheprovider", "-k", k, *extra]
        if workers:
            args += ["-n", str(workers)]
        for _attempt in range(3):
            load = os.getloadavg()[0]
            started = time.perf_counter()
            proc = subprocess.run(
                args,
                cwd=self.folder,
                capture_output=True,
                text=True,
                timeout=3600,
                env={**self.env, "QB_BENCH_OUT": str(out), "QB_BENCH_N": str(n)},
            )
            wall = time.perf_counter() - started
            if proc.returncode == 0:
                break
            # This machine is shared: another suite may restart the Docker engine under the run (its
            # containers restart with it). Said, the stack brought back, the session run again.
            print(
                f"bench: {name}: pytest exited {proc.returncode} ({proc.stdout.strip().splitlines()[-1:]}); again",
                file=sys.stderr,
                flush=True,
            )
            self.retries += 1
            out.unlink(missing_ok=True)
            for _ in range(12):  # the engine itself may take a while to come back
                time.sleep(10)
                try:
                    sh(str(VENV / "bin" / "qbctl"), "up", "postgres", "redis", "--no-ui", env=self.env, cwd=self.folder)
                    break
                except RuntimeError:
                    continue
        else:
            raise RuntimeError(f"{name}: pytest exited {proc.returncode}: {proc.stdout[-3000:]}{proc.stderr[-2000:]}")
        times = [t for line in out.read_text().splitlines() for t in json.loads(line)]
        summary = next((line for line in proc.stdout.splitlines() if line.startswith("qbctl: ")), "")
        print(
            f"bench: {name}{f' -n {workers}' if workers else ''}: {n} tests, median "
            f"{statistics.median(times) * 1000:.0f} ms, wall {wall:.1f}s, load {load:.1f}; {summary}",
            file=sys.stderr,
            flush=True,
        )
        return {
            "median_ms": round(statistics.median(times) * 1000, 1),
            "wall_s": round(wall, 2),
            "tests": n,
            "load": round(load, 2),
            "summary": summary,
        }

    def run(self) -> None:
        self.session("warm-up (builds the template)", "test_clone", [], 2)
        names = list(VARIANTS)
        order = random.Random(0)
        for _ in range(self.runs):
            order.shuffle(names)
            floor = None
            round_ = {}
            for name in names:
                k, extra = VARIANTS[name]
                n = max(5, self.tests // 5) if k == "test_migrate" else self.tests
                round_[name] = self.session(name, k, extra, n)
            floor = round_["without (shared database, the floor)"]["median_ms"]
            for name, r in round_.items():
                r["cost_per_test_ms"] = round(r["median_ms"] - floor, 1)
                self.results.setdefault(name, {"sessions": []})["sessions"].append(r)
            self.save()
            for name, k, extra in (
                ("-n 4: without", "test_without", []),
                ("-n 4: qb_database_url (FILE_COPY)", "test_clone", ["-o", "qb_clone_strategy=FILE_COPY"]),
                ("-n 4: qb_database_url (WAL_LOG)", "test_clone", ["-o", "qb_clone_strategy=WAL_LOG"]),
            ):
                r = self.session(name, k, extra, 100, workers=4)
                self.results.setdefault(name, {"sessions": []})["sessions"].append(r)
                self.save()

    def save(self) -> None:
        """The results so far (a run the shared machine breaks keeps what it measured)."""
        table = self.report()
        out = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "runs": self.runs,
            "cpus": os.cpu_count(),
            "sessions_run_again": self.retries,
            "results": self.results,
        }
        (ROOT / "bench" / "testdb.json").write_text(json.dumps(out, indent=1) + "\n")
        (ROOT / "bench" / "testdb.md").write_text(table + "\n")

    def report(self) -> str:
        lines = [
            "| variant | tests per session | median test | cost per test (median over rounds) | session wall "
            "| load average |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in self.results.items():
            s = r["sessions"]
            cost = [x["cost_per_test_ms"] for x in s if "cost_per_test_ms" in x]
            r["cost_per_test_ms"] = statistics.median(cost) if cost else None
            r["wall_s"] = statistics.median(x["wall_s"] for x in s)
            lines.append(
                f"| {name} | {s[0]['tests']} | {statistics.median(x['median_ms'] for x in s):.0f} ms | "
                + (f"{r['cost_per_test_ms']:.0f} ms" if cost else "")
                + f" | {r['wall_s']:.1f} s | "
                f"{min(x['load'] for x in s):.1f}-{max(x['load'] for x in s):.1f} |"
            )
        return "\n".join(lines)

    def cleanup(self) -> None:
        subprocess.run(
            [str(VENV / "bin" / "qbctl"), "reset", "--yes", "--no-snapshot"],
            env=self.env,
            cwd=self.folder,
            capture_output=True,
        )
        shutil.rmtree(self.tmp, ignore_errors=True)


def _pullable() -> bool:
    """Whether the real images are on this engine (else the stand-ins run, as in the other benches)."""
    proc = subprocess.run(["docker", "image", "inspect", "timescale/timescaledb:latest-pg15"], capture_output=True)
    return proc.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tests", type=int, default=100)
    args = parser.parse_args()
    bench = TestdbBench(args.runs, args.tests)
    try:
        bench.setup()
        bench.run()
    finally:
        bench.cleanup()
    bench.save()
    print(bench.report())


if __name__ == "__main__":
    main()
