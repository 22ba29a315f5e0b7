"""Snapshots' pure parts: the inventory comparison, the folder rules, RDB key counts, volume naming."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from qbctl.config import settings as settings_mod
from qbctl.errors import NoSpace, SnapshotDamaged, UsageError
from qbctl.snapshots import inventory, rdb, store
from qbctl.stack import volumes
from qbctl.workflows import restore, upgrade
from tests.helpers import qbctl


def inv(**changes) -> inventory.Inventory:
    base = inventory.Inventory(
        "15.18",
        15,
        "2.28.3",
        1000,
        "UTF8",
        "C.UTF-8",
        "C.UTF-8",
        "qb_user",
        "qb_trading_dev",
        tables={
            "public.market_data": {"rows": 10, "checksum": "123", "hash": "record"},
            "public.orders": {"rows": 0, "checksum": "0", "hash": "record"},
        },
        hypertables={"public.market_data": {"chunks": 3, "compressed_chunks": 1, "compression": True}},
        jobs=[
            {
                "id": 1000,
                "proc": "_timescaledb_functions.policy_compression",
                "hypertable": "public.market_data",
                "schedule_interval": "12:00:00",
                "config": "{}",
                "scheduled": True,
            }
        ],
        migrations=[{"kind": "schema", "name": "0001.sql", "checksum": "ab"}],
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_identical_inventories_have_no_differences_and_survive_json():
    a = inv()
    assert inventory.compare(a, inventory.Inventory.from_dict(json.loads(json.dumps(a.to_dict())))) == []
    assert a.rows == 10


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda i: i.tables["public.market_data"].update(rows=9), "public.market_data: 9 rows, expected 10"),
        (lambda i: i.tables["public.market_data"].update(checksum="124"), "same 10 rows but different contents"),
        (lambda i: i.tables.pop("public.orders"), "table public.orders is missing"),
        (lambda i: i.tables.update({"public.extra": {"rows": 0, "checksum": "0"}}), "table public.extra was not in"),
        (lambda i: i.hypertables["public.market_data"].update(compressed_chunks=0), "compressed chunks 0, expected 1"),
        (lambda i: i.hypertables.clear(), "hypertable public.market_data is missing"),
        (lambda i: i.jobs[0].update(schedule_interval="05:00:00"), "TimescaleDB jobs differ"),
        (lambda i: i.jobs[0].update(scheduled=False), "TimescaleDB jobs differ"),
        (lambda i: i.migrations.clear(), "applied migrations differ"),
    ],
)
def test_each_difference_is_named(change, expected):
    actual = inv()
    actual.tables, actual.hypertables = copy.deepcopy(actual.tables), copy.deepcopy(actual.hypertables)
    actual.jobs, actual.migrations = copy.deepcopy(actual.jobs), list(actual.migrations)
    change(actual)
    problems = inventory.compare(inv(), actual)
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_checksum_made_another_way_is_not_the_same_checksum_and_counts_only_skip_it():
    actual = inv()
    actual.tables = copy.deepcopy(actual.tables)
    actual.tables["public.market_data"]["hash"] = "text"
    assert inventory.compare(inv(), actual)
    actual.tables["public.market_data"].update(hash="none", checksum=None)
    assert inventory.compare(inv(), actual) == []
    actual.tables["public.market_data"]["rows"] = 11
    assert inventory.compare(inv(), actual) == ["public.market_data: 11 rows, expected 10"]


def test_table_keys_stay_plain_unless_a_dot_or_quote_would_make_two_tables_one():
    assert inventory.table_key("public", "market_data") == "public.market_data"
    assert inventory.table_key("Other Schema", "MixedCase") == "Other Schema.MixedCase"  # as older snapshots read
    assert inventory.table_key("a.b", "c") == '"a.b".c' != inventory.table_key("a", "b.c") == 'a."b.c"'
    assert inventory.table_key("public", 'say "hi"') == 'public."say ""hi"""'
    assert inventory.quote('x"y') == '"x""y"' and inventory.literal("it's") == "'it''s'"


def test_names_come_back_whole_through_hex():
    for name in ("t", "시세", "sep\x1erec\x1ffield\x1dnull", 'q"uote', "new\nline"):
        assert inventory.unhex(name.encode().hex()) == name
    assert inventory.unhex(None) is None
    assert "search_path=pg_catalog,pg_temp" in inventory.READ_PGOPTIONS
    assert "search_path" not in inventory.PGOPTIONS  # psql() runs TimescaleDB's functions by their plain names


def test_migrations_compare_in_any_order_the_database_sorted_them_in():
    two = [
        {"kind": "schema", "name": "0001.sql", "checksum": "ab"},
        {"kind": "schema", "name": "A.sql", "checksum": "c"},
    ]
    assert inventory.compare(inv(migrations=two), inv(migrations=two[::-1])) == []
    assert inventory.compare(inv(migrations=two), inv(migrations=two[:1])) == [
        "applied migrations differ: 1, expected 2"
    ]


def settings_at(tmp_path: Path, **env):
    return settings_mod.load(environ={"QBCTL_PROJECT": "demo", **env}, cwd=tmp_path)


def test_names_are_checked_and_automatic_ones_say_when_and_why():
    assert store.check_name("before-the-demo_2.1") == "before-the-demo_2.1"
    for bad in ("", "../x", "a/b", "-x", ".hidden", "x" * 101, "with space"):
        with pytest.raises(UsageError):
            store.check_name(bad)
    from datetime import UTC, datetime

    assert store.auto_name("db-reset", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "auto-db-reset-20260102-030405"


def test_a_snapshot_appears_only_when_complete(tmp_path):
    s = settings_at(tmp_path)
    with pytest.raises(RuntimeError):
        with store.staging(s, "one") as tmp:
            (tmp / "postgres.dump").write_bytes(b"x")
            raise RuntimeError("interrupted")
    assert store.entries(s) == [] and not any(store.folder(s).iterdir())
    with store.staging(s, "one") as tmp:
        assert tmp.name.startswith(".tmp-one-") and store.entries(s) == []
        _write(tmp, {"postgres.dump": b"dump"})
    assert [e.name for e in store.entries(s)] == ["one"]
    assert (tmp_path / ".qbctl" / ".gitignore").read_text().endswith("*\n")
    with pytest.raises(UsageError, match="exists already"):
        with store.staging(s, "one"):
            pass


def _write(folder: Path, files: dict[str, bytes], automatic: bool = False, created: str = "2026-01-01T00:00:00"):
    meta = {"format": store.FORMAT, "automatic": automatic, "created": created, "files": {}}
    for name, data in files.items():
        w = store.Writer(folder / name)
        w(data)
        meta["files"][name] = w.close()
    store.write_meta(folder, meta)


def test_damage_is_found_file_by_file(tmp_path):
    s = settings_at(tmp_path)
    with store.staging(s, "snap") as tmp:
        _write(tmp, {"postgres.dump": b"0123456789", "redis.rdb": b"REDIS0011"})
    store.verify(store.find(s, "snap"))
    path = store.folder(s) / "snap"
    (path / "redis.rdb").write_bytes(b"REDIS0012")
    with pytest.raises(SnapshotDamaged, match="redis.rdb changed since the snapshot was taken"):
        store.verify(store.find(s, "snap"))
    (path / "redis.rdb").write_bytes(b"REDIS")
    with pytest.raises(SnapshotDamaged, match="cut short"):
        store.verify(store.find(s, "snap"))
    (path / "redis.rdb").unlink()
    with pytest.raises(SnapshotDamaged, match="redis.rdb is missing"):
        store.verify(store.find(s, "snap"))
    (path / "meta.json").write_text("{not json")
    with pytest.raises(SnapshotDamaged, match="meta.json cannot be read"):
        store.verify(store.find(s, "snap"))
    with pytest.raises(UsageError, match="no snapshot named other"):
        store.find(s, "other")


def test_pruning_keeps_the_newest_automatic_ones_and_every_named_one(tmp_path):
    s = settings_at(tmp_path)
    for i in range(4):
        with store.staging(s, f"auto-reset-{i}") as tmp:
            _write(tmp, {"postgres.dump": b"x"}, automatic=True, created=f"2026-01-0{i + 1}T00:00:00")
    with store.staging(s, "mine") as tmp:
        _write(tmp, {"postgres.dump": b"x"}, created="2025-01-01T00:00:00")
    stale = store.folder(s) / ".tmp-dead-1"
    stale.mkdir()
    os.utime(stale, (0, 0))
    assert store.prune(s, 2, protect=("auto-reset-0",)) == ["auto-reset-1"]
    assert [e.name for e in store.entries(s)] == ["mine", "auto-reset-0", "auto-reset-2", "auto-reset-3"]
    assert store.prune(s, 1) == ["auto-reset-0", "auto-reset-2"]
    assert not stale.exists()


def test_a_full_disk_is_no_space_not_a_traceback(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    w = store.Writer(Path("/dev/full"))
    with pytest.raises(NoSpace, match="no space left"):
        w(b"x" * (1 << 20))
        w.close()
    with pytest.raises(NoSpace, match="the snapshot needs about [0-9,]+ MB on the disk of .*; [0-9,]+ MB is free"):
        store.check_space(tmp_path, store.free_bytes(tmp_path) + 2 * 2**20, "the snapshot")
    store.check_space(tmp_path / "not" / "yet", 1, "the snapshot")  # measured where it will be


def _length(n: int) -> bytes:
    return bytes([n]) if n < 64 else bytes([0x40 | (n >> 8), n & 0xFF])


def _rdb(*parts: bytes) -> bytes:
    return b"REDIS0011" + b"".join(parts)


def test_rdb_key_counts_come_from_the_file(tmp_path):
    aux = bytes([rdb.AUX]) + _length(9) + b"redis-ver" + _length(6) + b"7.0.15"
    int_aux = bytes([rdb.AUX]) + _length(10) + b"redis-bits" + bytes([0xC0, 64])
    cases = {
        "keys": (_rdb(aux, int_aux, bytes([rdb.SELECTDB, 0, rdb.RESIZEDB]) + _length(150) + _length(3)), {"db0": 150}),
        "empty": (_rdb(aux, bytes([rdb.EOF])), {}),
        "db3": (_rdb(aux, bytes([rdb.SELECTDB, 3, rdb.RESIZEDB, 7, 0])), {"db3": 7}),
        "garbage": (b"not an rdb at all", None),
        "cut": (_rdb(bytes([rdb.AUX]) + _length(9) + b"redis"), None),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert rdb.key_counts(tmp_path / name) == expected, name


def test_the_image_major_picks_the_volume_and_the_old_image_is_found_by_id():
    existing = {"p_pgdata": {}, "p_pgdata_pg17": {}}
    assert volumes.data_volume("p", "17", existing) == "p_pgdata_pg17"
    assert volumes.data_volume("p", "15", existing) == "p_pgdata"
    assert volumes.data_volume("p", None, existing) == "p_pgdata"
    assert volumes.data_volume("p", "18", {}) == "p_pgdata"
    labels = volumes.created_by({"PG_MAJOR": "15"}, "timescale/timescaledb:latest-pg15", "sha256:abc")
    assert labels == {
        "io.qbctl.pg-major": "15",
        "io.qbctl.pg-image": "timescale/timescaledb:latest-pg15",
        "io.qbctl.pg-image-id": "sha256:abc",
    }
    assert volumes.recorded_image(labels, lambda ref: True) == "sha256:abc"
    assert (
        volumes.recorded_image(labels, lambda ref: not ref.startswith("sha256")) == "timescale/timescaledb:latest-pg15"
    )
    assert volumes.recorded_image(labels, lambda ref: False) is None
    assert "`qbctl upgrade`" in volumes.ways_out("p_pgdata", "15")


def test_the_stacks_own_role_is_left_out_of_the_roles_restored_but_not_its_settings(tmp_path):
    dumped = tmp_path / "globals.sql"
    dumped.write_text(
        "SET x = 1;\nCREATE ROLE qb_user;\nALTER ROLE qb_user WITH SUPERUSER PASSWORD 'SCRAM';\n"
        'CREATE ROLE qb_user_ro;\nALTER ROLE qb_user_ro WITH LOGIN;\nCREATE ROLE "qb_user";\n'
    )
    kept = upgrade._globals(dumped, "qb_user").decode()
    assert kept == "SET x = 1;\nCREATE ROLE qb_user_ro;\nALTER ROLE qb_user_ro WITH LOGIN;\n"
    # As pg_dumpall 15 writes them: the user's settings stay; a name with a quote in it is written quoted.
    dumped.write_text(
        'CREATE ROLE "we""ird";\nALTER ROLE "we""ird" WITH LOGIN;\nCREATE ROLE qb_user;\n'
        'ALTER ROLE qb_user WITH LOGIN;\n-- User Config "we"ird"\n'
        "ALTER ROLE \"we\"\"ird\" SET search_path TO 'public', 'pg_catalog';\n"
    )
    assert upgrade._globals(dumped, 'we"ird').decode() == (
        'CREATE ROLE qb_user;\nALTER ROLE qb_user WITH LOGIN;\n-- User Config "we"ird"\n'
        "ALTER ROLE \"we\"\"ird\" SET search_path TO 'public', 'pg_catalog';\n"
    )


def test_working_database_names_fit_postgresql_and_versions_compare():
    assert restore._name("qb_trading_dev", "restore") == "qb_trading_dev_qbctl_restore"
    long = restore._name("x" * 70, "replaced")
    assert len(long.encode()) <= 63 and long.endswith("_qbctl_replaced")
    assert restore._version("2.28.3") > restore._version("2.9.1")
    assert restore._version("2.17.0-dev") == (2, 17, 0)


def test_snapshot_commands_parse_and_answer_without_an_engine(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QBCTL_", "DATABASE_URL", "REDIS_URL"))}
    env["DOCKER_HOST"] = "unix:///nonexistent.sock"  # none of these needs the engine
    listed = qbctl("snapshot", "list", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0 and json.loads(listed.stdout)["snapshots"] == []
    gone = qbctl("snapshot", "rm", "nope", env=env, cwd=tmp_path)
    assert gone.returncode == 2 and "no snapshot named nope" in gone.stderr
    bad = qbctl("snapshot", "no/slash", "--json", env=env, cwd=tmp_path)
    assert bad.returncode == 2 and json.loads(bad.stdout)["error"]["code"] == "SNAPSHOT_NAME"
    helped = qbctl("snapshot", "--help", env=env, cwd=tmp_path)
    assert helped.returncode == 0 and "list" in helped.stdout and "rm" in helped.stdout
    missing = qbctl("restore", "nope", "--yes", "--json", env=env, cwd=tmp_path)
    assert missing.returncode == 2 and json.loads(missing.stdout)["error"]["code"] == "SNAPSHOT_NOT_FOUND"
