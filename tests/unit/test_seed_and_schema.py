"""Pure parts of seed's ownership record, where the schema comes from, memory read from a cgroup, completion."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from qbctl.config import settings as S
from qbctl.db import files
from qbctl.db.seed import runs
from qbctl.engine import facade as engine
from tests.helpers import ROOT

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)


def minutes(*ks: int) -> list[datetime]:
    return [T0 + timedelta(minutes=k) for k in ks]


def test_seeded_minutes_are_recorded_as_ranges_that_hold_no_foreign_row():
    taken = minutes(*range(10))
    assert runs(taken, []) == [(taken[0], taken[-1])]
    assert runs(taken, minutes(-5, 30)) == [(taken[0], taken[-1])]  # foreign rows outside: one range
    # foreign rows at 4 (left out of the seed) and at 6.5 (between two seeded minutes): three ranges
    seeded = [t for t in taken if t != minutes(4)[0]]
    busy = sorted(minutes(4) + [T0 + timedelta(minutes=6, seconds=30)])
    assert runs(seeded, busy) == [
        (minutes(0)[0], minutes(3)[0]),
        (minutes(5)[0], minutes(6)[0]),
        (minutes(7)[0], minutes(9)[0]),
    ]
    assert runs([], minutes(1)) == []


def test_the_schema_is_the_projects_own_else_the_one_qbctl_ships(tmp_path):
    s = S.load(environ={"QBCTL_PROJECT": "x"}, cwd=tmp_path)
    assert files.sql_dir(s) == files.packaged_sql() == ROOT / "sql"  # a checkout: the repository's one copy
    assert "shipped with qbctl" in files.describe(s)
    (tmp_path / "sql" / "schema").mkdir(parents=True)
    (tmp_path / "sql" / "schema" / "0001_own.sql").write_text("CREATE TABLE own (id int);\n")
    own = S.load(environ={}, cwd=tmp_path)
    assert files.sql_dir(own) == tmp_path / "sql" and [f.name for f in files.load(own)] == ["0001_own.sql"]
    assert "the project's own" in files.describe(own)


def test_one_copy_of_each_schema_file_in_the_repository():
    # bench/.venv: bench/run.py installs qbctl there, with its packaged copy of sql/
    names = [p.name for p in ROOT.rglob("*.sql") if not {".git", "build", ".venv"} & set(p.parts)]
    assert len(names) == len(set(names)), sorted(names)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_memory_is_read_from_a_local_cgroup_v1_or_v2(tmp_path):
    cid = "ab" * 32
    v1 = tmp_path / "v1" / "memory" / "docker" / cid
    _write(v1 / "memory.usage_in_bytes", "104857600\n")
    _write(v1 / "memory.limit_in_bytes", "314572800\n")
    _write(v1 / "memory.max_usage_in_bytes", "209715200\n")
    _write(v1 / "memory.stat", "cache 5\ninactive_file 1\ntotal_inactive_file 4194304\n")
    m = engine.cgroup_memory(cid, str(tmp_path / "v1"))
    assert (m.usage, m.cache, m.limit, m.max_usage) == (104857600, 4194304, 314572800, 209715200)
    assert m.without_cache == 100 * 2**20 - 4 * 2**20
    v2 = tmp_path / "v2" / "system.slice" / f"docker-{cid}.scope"
    _write(v2 / "memory.current", "52428800\n")
    _write(v2 / "memory.max", "157286400\n")
    _write(v2 / "memory.stat", "anon 1\ninactive_file 1048576\n")
    m = engine.cgroup_memory(cid, str(tmp_path / "v2"))
    assert (m.usage, m.cache, m.limit, m.max_usage) == (52428800, 1048576, 157286400, None)
    assert engine.cgroup_memory("cd" * 32, str(tmp_path / "v2")) is None  # not here: the stats API answers


def complete(words: str) -> list[str]:
    env = {
        **os.environ,
        "_QBCTL_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run([sys.executable, "-m", "qbctl"], env=env, capture_output=True, text=True, timeout=30)
    return proc.stdout.split()


def test_completion_knows_the_service_names():
    assert complete("qbctl up po") == ["postgres"]
    assert complete("qbctl logs re") == ["redis", "redis-commander"]
    assert complete("qbctl up postgres ") == ["redis", "adminer", "redis-commander"]  # not twice
