import pytest

from qbctl.stack import volumes


def test_created_by_records_the_major_not_what_an_image_says_of_timescaledb():
    # The timescale/timescaledb images set no TimescaleDB variable; what one says is not the data's version.
    assert volumes.created_by({"PG_MAJOR": "15", "TS_VERSION": "2.28.3"}) == {"io.qbctl.pg-major": "15"}
    assert volumes.created_by({}) == {}


def test_major_mismatch_is_refused_with_the_ways_out():
    with pytest.raises(volumes.VolumeIncompatible) as e:
        volumes.check("qb_pgdata", {"io.qbctl.pg-major": "14"}, "timescale/timescaledb:latest-pg15", {"PG_MAJOR": "15"})
    assert "holds PostgreSQL 14 data" in e.value.message and "latest-pg14" in e.value.hint
    assert "qbctl reset" in e.value.hint and e.value.code == "VOLUME_INCOMPATIBLE"


def test_same_major_passes_and_the_data_s_timescaledb_is_compared_with_the_image_s():
    assert volumes.check("v", {"io.qbctl.pg-major": "15"}, "img", {"PG_MAJOR": "15"}) is None
    warning = volumes.timescaledb_behind("qb", "2.28.2", "2.28.3")
    assert "database qb uses TimescaleDB 2.28.2, the image ships 2.28.3" in warning and "qbctl upgrade" in warning
    assert volumes.timescaledb_behind("qb", "2.9.1", "2.28.3")  # numbers, not text: 9 < 28
    assert volumes.timescaledb_behind("qb", "2.28.3", "2.28.3") is None
    assert volumes.timescaledb_behind("qb", "2.28.3", "2.28.2") is None  # newer data: the server says so itself
    assert volumes.timescaledb_behind("qb", None, "2.28.3") is None  # no extension in the database


def test_log_lines_are_recognised():
    logs = [
        "FATAL:  database files are incompatible with server",
        "DETAIL:  The data directory was initialized by PostgreSQL version 14, which is not compatible with "
        "this version 15.20.",
    ]
    err = volumes.classify(logs, "qb_pgdata")
    assert err and "(14)" in err.message and "latest-pg14" in err.hint
    assert (
        volumes.classify(['could not access file "$libdir/timescaledb-2.9.1": No such file'], "v").code
        == "VOLUME_INCOMPATIBLE"
    )
    assert volumes.classify(["all fine"], "v") is None
