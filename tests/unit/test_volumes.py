import pytest

from qbctl.stack import volumes


def test_created_by_records_the_major_and_timescaledb():
    assert volumes.created_by({"PG_MAJOR": "15", "TS_VERSION": "2.28.3"}) == {
        "io.qbctl.pg-major": "15", "io.qbctl.timescaledb": "2.28.3"}
    assert volumes.created_by({}) == {}


def test_major_mismatch_is_refused_with_the_ways_out():
    with pytest.raises(volumes.VolumeIncompatible) as e:
        volumes.check("qb_pgdata", {"io.qbctl.pg-major": "14"}, "timescale/timescaledb:latest-pg15", {"PG_MAJOR": "15"})
    assert "holds PostgreSQL 14 data" in e.value.message and "latest-pg14" in e.value.hint
    assert "qbctl reset" in e.value.hint and e.value.code == "VOLUME_INCOMPATIBLE"


def test_same_major_passes_and_a_timescaledb_change_warns():
    labels = {"io.qbctl.pg-major": "15", "io.qbctl.timescaledb": "2.17.0"}
    assert volumes.check("v", labels, "img", {"PG_MAJOR": "15"}) is None
    warning = volumes.check("v", labels, "img", {"PG_MAJOR": "15", "TIMESCALEDB_VERSION": "2.28.3"})
    assert "ALTER EXTENSION timescaledb UPDATE" in warning


def test_log_lines_are_recognised():
    logs = ['FATAL:  database files are incompatible with server',
            'DETAIL:  The data directory was initialized by PostgreSQL version 14, which is not compatible with '
            'this version 15.20.']
    err = volumes.classify(logs, "qb_pgdata")
    assert err and "(14)" in err.message and "latest-pg14" in err.hint
    assert volumes.classify(['could not access file "$libdir/timescaledb-2.9.1": No such file'], "v").code == \
        "VOLUME_INCOMPATIBLE"
    assert volumes.classify(["all fine"], "v") is None
