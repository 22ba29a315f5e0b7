"""`qbctl db migrate --rehearse` on the backend's size of data, beside a plain `db migrate` of the same file:
`python bench/rehearse.py [--runs N]`.

A stack of its own (stand-in images: TimescaleDB 2.28.3 with its scheduler on), migrated, seeded with
`db seed --symbols 200 --days 30` (1.64 M candles, 3.27 M indicator values) and, as the VM has it after
days of running, every chunk older than COMPRESSION_AFTER_DAYS (7) compressed (the compression policies'
jobs held meanwhile, db/jobs.py). Then per round, in a shuffled order: the rehearsal with its default copy
(pg_basebackup into a scratch container), the rehearsal with `--logical` (pg_dump | pg_restore into a new
database of the same server), and the plain `db migrate` of the same file (undone after each round: the
column and index dropped, its tracking row deleted, the chunks it decompressed compressed again). Each
rehearsal's total is split into copy and apply from its `--json`. The machine's load average is kept with
each figure: this machine is shared. Results: bench/rehearse.json and bench/rehearse.md.

`--remote` (root, tests/sshlab.py) adds the same rehearsal with the stack reached as a VM through ssh
(DOCKER_HOST=ssh://enginevm; +50 ms round trip through enginevm-slow): pg_basebackup runs by exec in the
"VM's" postgres container and its tar stream comes through the ssh tunnel into the scratch container on the
"laptop's" own engine (QBCTL_REHEARSE_DOCKER_HOST, its default unix socket: here the same daemon, so the
figures are the ssh path's cost, not a network's bandwidth).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import free_port  # noqa: E402

MIGRATION = """\
-- what a real change looks like: a column on the candles, old rows touched, an index, a column elsewhere
ALTER TABLE market_data ADD COLUMN note text;
UPDATE market_data SET note = 'checked' WHERE symbol = '005930' AND time < now() - interval '8 days';
CREATE INDEX trades_fee_idx ON trades (symbol, fee);
ALTER TABLE orders ADD COLUMN audited_by text;
"""
UNDO = """
ALTER TABLE market_data DROP COLUMN IF EXISTS note;
DROP INDEX IF EXISTS trades_fee_idx;
ALTER TABLE orders DROP COLUMN IF EXISTS audited_by;
DELETE FROM qbctl.migrations WHERE name = '0090_bench.sql';
"""
PASSWORD = "bench-pw"


class Bench:
    def __init__(self, runs: int, remote: bool = False) -> None:
        self.runs = runs
        self.remote = remote
        self.lab = None
        self.folder = Path(tempfile.mkdtemp(prefix="qbctl-bench-rehearse-"))
        tag = os.environ.get("QBCTL_STANDIN_TAG") or "test"
        pg, rd = free_port(), free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("QBCTL_", "DATABASE_URL", "REDIS_URL"))}
        self.env.update(
            {
                "QBCTL_PROJECT": "qbbench-rehearse-" + uuid.uuid4().hex[:6],
                "PYTHONPATH": str(ROOT),
                "NO_COLOR": "1",
                "DATABASE_URL": f"postgresql://qb_user:{PASSWORD}@localhost:{pg}/qb_trading_dev",
                "REDIS_URL": f"redis://localhost:{rd}/0",
                "QBCTL_POSTGRES_IMAGE": f"qbctl-standin/postgres:{tag}",
                "QBCTL_REDIS_IMAGE": f"qbctl-standin/redis:{tag}",
                "QBCTL_ADMINER_IMAGE": f"qbctl-standin/adminer:{tag}",
                "QBCTL_REDIS_COMMANDER_IMAGE": f"qbctl-standin/redis-commander:{tag}",
            }
        )
        self.url = f"postgresql://qb_user:{PASSWORD}@127.0.0.1:{pg}/qb_trading_dev"
        self.rounds: list[dict] = []
        self.setup_info: dict = {}

    def qbctl(self, *args: str, ok=(0,)) -> tuple[float, str]:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "qbctl", *args],
            env=self.env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        elapsed = time.perf_counter() - started
        if proc.returncode not in ok:
            raise RuntimeError(
                f"qbctl {' '.join(args)} exited {proc.returncode}: {proc.stderr[-1500:]}{proc.stdout[-1500:]}"
            )
        return elapsed, proc.stdout

    def sql(self, text: str):
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(text)
            return cur.fetchall() if cur.description else None

    def compress_old_chunks(self) -> dict:
        import psycopg

        from qbctl.db import jobs
        from qbctl.db.connect import psycopg_rows

        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = psycopg_rows(conn)
            held = jobs.hold(rows, "j.proc_name = 'policy_compression'")
            try:
                for table in ("market_data", "technical_indicators", "trades", "system_logs"):
                    conn.execute(
                        "SELECT count(compress_chunk(c, if_not_compressed => true)) FROM"
                        f" show_chunks('{table}', older_than => interval '7 days') c"
                    )
            finally:
                jobs.release(rows, held)
            return {
                h: [int(c), int(n)]
                for h, c, n in conn.execute(
                    "SELECT hypertable_name, count(*) FILTER (WHERE is_compressed), count(*) FROM"
                    " timescaledb_information.chunks WHERE hypertable_name NOT LIKE '\\_%' GROUP BY 1"
                ).fetchall()
            }

    def setup(self) -> None:
        subprocess.run(["cp", "-r", str(ROOT / "sql"), str(self.folder / "sql")], check=True)
        self.qbctl("up", "postgres")
        self.qbctl("db", "migrate")
        seconds, _ = self.qbctl("db", "seed", "--symbols", "200", "--days", "30", "--no-redis")
        self.setup_info["seed_seconds"] = round(seconds, 1)
        self.setup_info["chunks_compressed"] = self.compress_old_chunks()
        ((size,),) = self.sql("SELECT pg_database_size(current_database())")
        self.setup_info["database_mb"] = round(size / 2**20)
        (self.folder / "sql" / "schema" / "0090_bench.sql").write_text(MIGRATION)

    def rehearse(self, *flags: str, host: str | None = None) -> dict:
        load = os.getloadavg()[0]
        if host is None:
            seconds, out = self.qbctl("db", "migrate", "--rehearse", "--json", *flags)
        else:  # the "laptop": the lab's ssh files, DOCKER_HOST=ssh://..., its own engine the local socket
            env = {k: v for k, v in self.lab.env(self.env, host=host).items() if k != "QBCTL_REHEARSE_DOCKER_HOST"}
            started = time.perf_counter()
            proc = subprocess.run(
                self.lab.wrap(
                    [sys.executable, "-m", "qbctl", "db", "migrate", "--rehearse", "--json", *flags], apart=False
                ),
                env=env,
                cwd=self.folder,
                capture_output=True,
                text=True,
                timeout=1800,
            )
            seconds, out = time.perf_counter() - started, proc.stdout
            if proc.returncode != 0:
                raise RuntimeError(f"rehearse over {host} exited {proc.returncode}: {proc.stderr[-1500:]}{out[-1500:]}")
        data = json.loads(out)
        assert data["ok"], data
        got = {
            "total": round(seconds, 2),
            "copy": data["copy_seconds"],
            "apply": data["apply_seconds"],
            "load": round(load, 2),
        }
        if host is not None:
            assert data["copy"]["source_host"].startswith("enginevm"), data
            assert data["copy"]["engine"].startswith("unix://"), data
            got["tunnel_mb"] = round(data["copy"]["tunnel_bytes"] / 2**20)
        return got

    def plain(self) -> dict:
        load = os.getloadavg()[0]
        seconds, out = self.qbctl("db", "migrate", "--json")
        assert json.loads(out)["applied"], out
        self.sql(UNDO)
        self.sql(
            "SELECT count(compress_chunk(c)) FROM show_chunks('market_data', older_than => interval '7 days') c"
            " JOIN _timescaledb_catalog.chunk ch ON format('%I.%I', ch.schema_name, ch.table_name)::regclass = c"
            " WHERE ch.status & 8 = 8"
        )
        return {"total": round(seconds, 2), "load": round(load, 2)}

    def run(self) -> None:
        cases = {
            "rehearse": lambda: self.rehearse(),
            "rehearse --logical": lambda: self.rehearse("--logical"),
            "migrate": self.plain,
        }
        if self.remote:
            from tests.sshlab import Lab, available

            why = available()
            if why:
                raise SystemExit(f"bench: --remote needs the ssh lab: {why}")
            self.lab = Lab(delay=0.025).start()  # enginevm-slow: 25 ms each way
            cases["rehearse over ssh"] = lambda: self.rehearse(host="ssh://enginevm")
            cases["rehearse over ssh +50 ms"] = lambda: self.rehearse(host="ssh://enginevm-slow")
        for n in range(self.runs):
            order = list(cases)
            random.shuffle(order)
            got = {}
            for name in order:
                got[name] = cases[name]()
                print(f"round {n + 1}: {name}: {got[name]}", file=sys.stderr, flush=True)
            self.rounds.append(got)

    def cleanup(self) -> None:
        if self.lab is not None:
            self.lab.close()
        try:
            self.qbctl("reset", "--yes", "--no-snapshot")
        except RuntimeError as exc:
            print(f"bench: cleanup: {exc}", file=sys.stderr)

    def summary(self) -> dict:
        out = {}
        for name in self.rounds[0]:
            figures = [r[name] for r in self.rounds]
            out[name] = {k: round(statistics.median(f[k] for f in figures), 2) for k in figures[0] if k != "load"}
            out[name]["min_total"] = min(f["total"] for f in figures)
            out[name]["max_total"] = max(f["total"] for f in figures)
        return out

    def save(self) -> None:
        data = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "runs": self.runs,
            "setup": self.setup_info,
            "rounds": self.rounds,
            "median": self.summary(),
        }
        (ROOT / "bench" / "rehearse.json").write_text(json.dumps(data, indent=2) + "\n")
        (ROOT / "bench" / "rehearse.md").write_text(self.report(data))

    def report(self, data: dict) -> str:
        lines = [
            f"Run of {data['when']}, {data['runs']} rounds; database {data['setup']['database_mb']} MB; "
            f"chunks compressed (compressed, all): {data['setup']['chunks_compressed']}",
            "",
            "| case | total (median) | min | max | copy | apply | through the tunnel |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in data["median"].items():
            tunnel = f"{m['tunnel_mb']:.0f} MB" if "tunnel_mb" in m else "-"
            lines.append(
                f"| `{name}` | {m['total']:.1f} s | {m['min_total']:.1f} s | {m['max_total']:.1f} s | "
                f"{m['copy']:.1f} s | {m['apply']:.2f} s | {tunnel} |"
                if "copy" in m
                else f"| `{name}` | {m['total']:.1f} s | {m['min_total']:.1f} s | {m['max_total']:.1f} s | - | - | - |"
            )
        loads = [r[k]["load"] for r in data["rounds"] for k in r]
        lines += ["", f"Load average during the runs: {min(loads):.1f}-{max(loads):.1f} (2 cores, shared)."]
        return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--remote", action="store_true", help="also over ssh (root: tests/sshlab.py)")
    args = parser.parse_args()
    bench = Bench(args.runs, args.remote)
    try:
        bench.setup()
        bench.run()
    finally:
        bench.cleanup()
    bench.save()
    print((ROOT / "bench" / "rehearse.md").read_text())


if __name__ == "__main__":
    main()
