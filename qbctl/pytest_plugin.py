"""qbctl's pytest plugin: a migrated PostgreSQL database and an empty Redis database of their own
for every test of the backend, on the server of the project's DATABASE_URL and REDIS_URL.

Installing qbctl registers it (the `pytest11` entry point `qbctl`; `-p no:qbctl` turns it off).
Importing it costs nothing: the settings, the database code and the drivers (psycopg, redis) are
imported inside the fixtures, when a test asks for one, and nothing runs before that.

Fixtures (docs/pytest-plugin.md):
- `qb_database_url`: a clone of the template (db/testdb.py) for one test, dropped after it;
- `qb_session_database_url`: one clone for the whole session (each xdist worker has its own);
- `qb_seeded_database_url`: a clone of a template holding `db seed`'s data, compressed;
- `qb_run_job(relation=None, kind=None)`: runs policy jobs of the test's database now (a clone's
  jobs are paused); `run_jobs(url, ...)` is the same for any URL;
- `qb_redis_url`, `qb_session_redis_url`: a Redis database of its own (db/testredis.py), empty.

A failure to get one (no CREATEDB, the server down, no TimescaleDB, a bad setting) is one line in
the test's report (`qbctl: ...` and what fixes it), not a traceback, and the session does not try
again for every test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

OPTIONS = {  # name: (help, ini default)
    "qb_up": (
        "start the stack's postgres and redis (`qbctl up postgres redis`) when a test needs them and they "
        "are not running; off by default: the plugin never starts the stack by itself",
        False,
    ),
    "qb_without_timescaledb": (
        "apply the plain schema (db migrate --without-timescaledb): no hypertables, "
        "policies or jobs, for a server without TimescaleDB",
        False,
    ),
}


def pytest_addoption(parser) -> None:
    group = parser.getgroup("qbctl", "qbctl: a migrated database and an empty Redis of their own per test")
    for name, (text, default) in OPTIONS.items():
        group.addoption(
            "--" + name.replace("_", "-"),
            action="store_true",
            default=None,
            dest=name,
            help=text + f" (ini: {name} = true)",
        )
        parser.addini(name, text, type="bool", default=default)
    parser.addini(
        "qb_clone_strategy", "how clones are copied: FILE_COPY (measured fastest here) or WAL_LOG", default=""
    )
    parser.addini("qb_seed", "qb_seeded_database_url's data: SYMBOLSxDAYS of `db seed` (default 5x10)", default="5x10")


def _option(config, name: str) -> bool:
    given = config.getoption(name)
    return bool(config.getini(name) if given is None else given)


def _one_line(err) -> str:
    text = f"qbctl: {err.message}"
    return text + (f" ({err.hint})" if err.hint else "")


def _run(fn, *args, **kwargs):
    """fn(...), with qbctl's errors (and a driver's error that escaped) as one line in the report."""
    from qbctl.db import connect
    from qbctl.errors import QbctlError

    try:
        return fn(*args, **kwargs)
    except QbctlError as err:
        failure = err
    except Exception as exc:  # noqa: BLE001 - a psycopg or redis error in words; anything else is a bug
        escaped = connect.escaped_error(exc, "the pytest plugin")
        if escaped is None:
            raise
        failure = escaped
    _fail(failure)  # outside the handler: the report shows the line, not the exception it came from


@pytest.fixture(scope="session")
def _qb_runtime():
    """The session's Runtime (qbctl.engine.runtime): the engine and an ssh engine's tunnel, through which the
    URLs the fixtures hand out reach the servers; closed when the session ends."""
    from qbctl.engine.runtime import Runtime

    with Runtime() as rt:
        yield rt


@pytest.fixture(scope="session")
def _qb_settings(pytestconfig, _qb_runtime):
    """The project's settings, found as the CLI finds them (the current folder, QBCTL_PROJECT_DIR,
    the environment over .env); with --qb-up, the stack's postgres and redis started."""
    from qbctl.config import settings as settings_mod

    settings = _run(settings_mod.load)
    if not _option(pytestconfig, "qb_up"):
        yield settings
        return
    from qbctl.stack import up as up_mod

    options = up_mod.UpOptions(services=("postgres", "redis"), no_ui=True)
    result = _run(up_mod.up, settings, options, rt=_qb_runtime)
    if result.error is not None:
        _fail(result.error)
    yield settings


def _fail(err):
    pytest.fail(_one_line(err), pytrace=False)


@pytest.fixture(scope="session")
def _qb_postgres(_qb_settings, _qb_runtime, pytestconfig):
    """This session's use of the PostgreSQL server: its lock, its sweep of leftovers, its clones."""
    import os

    from qbctl.db import testdb

    session = _run(
        testdb.Session,
        _qb_settings,
        without_timescaledb=_option(pytestconfig, "qb_without_timescaledb"),
        strategy=pytestconfig.getini("qb_clone_strategy") or None,
        workers=int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1),
        rt=_qb_runtime,
    )
    _run(session.open)
    yield session
    _run(session.close)
    _report(
        pytestconfig,
        {"templates": session.templates, "clone_seconds": session.clone_seconds, "strategy": session.strategy},
    )


# --- the summary line: what the session (all xdist workers) did with templates and clones --------
_STATS = pytest.StashKey[list]()


def _report(config, stats: dict) -> None:
    config.stash.setdefault(_STATS, []).append(stats)
    if hasattr(config, "workeroutput"):  # an xdist worker: the controller prints it
        config.workeroutput["qbctl"] = stats


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    stats = getattr(node, "workeroutput", {}).get("qbctl")
    if stats:
        node.config.stash.setdefault(_STATS, []).append(stats)


def summary(all_stats: list[dict]) -> str:
    """One line: each template and how this run had it; the clones made, their median time. Pure."""
    hows: dict[str, dict[str, float]] = {}
    for stats in all_stats:
        for name, (how, seconds) in stats["templates"].items():
            hows.setdefault(name, {})[how] = max(seconds, hows.get(name, {}).get(how, 0.0))
    parts = []
    for name, how in hows.items():
        if "built" in how:
            parts.append(f"template {name} built in {how['built']:.1f}s")
        elif "waited" in how:
            parts.append(f"template {name} built by another session (waited {how['waited']:.1f}s)")
        else:
            parts.append(f"template {name} found ready")
    times = sorted(t for stats in all_stats for t in stats["clone_seconds"])
    if times:
        strategies = "/".join(sorted({stats["strategy"] for stats in all_stats}))
        parts.append(
            f"{len(times)} test database{'s' if len(times) != 1 else ''} cloned ({strategies}, median "
            f"{times[len(times) // 2] * 1000:.0f} ms)"
        )
    return "qbctl: " + "; ".join(parts) if parts else ""


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    line = summary(config.stash.get(_STATS, []))
    if line and not hasattr(config, "workeroutput"):
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def _qb_template(_qb_postgres) -> str:
    return _run(_qb_postgres.template)


def _clone_url(session, template: str):
    from qbctl.db import testdb

    cloner = session.cloner(template)
    name = _run(cloner.take)
    try:
        yield testdb.url(session.settings, name, rt=session.rt)
    finally:
        cloner.give_back(name)


@pytest.fixture
def qb_database_url(_qb_postgres, _qb_template) -> Iterator[str]:
    """The URL of a database of this test's own: the project's schema and policies (the sql/ that
    `qbctl db migrate` applies), no rows, TimescaleDB's jobs paused; dropped after the test."""
    yield from _clone_url(_qb_postgres, _qb_template)


@pytest.fixture(scope="session")
def qb_session_database_url(_qb_postgres, _qb_template) -> Iterator[str]:
    """One such database for the whole session (each xdist worker has its own), dropped at its end."""
    from qbctl.db import testdb

    name = _run(_qb_postgres.clone, _qb_template)
    try:
        _run(_qb_postgres.keep_scheduler_off, name)
        yield testdb.url(_qb_postgres.settings, name, rt=_qb_postgres.rt)
    finally:
        _run(_qb_postgres.drop, name)


def _seed_spec(config) -> tuple[int, int]:
    from qbctl.errors import ConfigError

    text = config.getini("qb_seed").strip().lower()
    try:
        symbols, days = (int(x) for x in text.split("x"))
        if symbols < 1 or days < 1:
            raise ValueError
    except ValueError:
        _fail(
            ConfigError(
                f"qb_seed = {text!r}: expected SYMBOLSxDAYS, such as 5x10",
                hint="fix qb_seed in the pytest configuration",
            )
        )
    return symbols, days


@pytest.fixture(scope="session")
def _qb_seeded_template(_qb_postgres, pytestconfig) -> str:
    return _run(_qb_postgres.template, seed=_seed_spec(pytestconfig))


@pytest.fixture
def qb_seeded_database_url(_qb_postgres, _qb_seeded_template) -> Iterator[str]:
    """Like qb_database_url, with `qbctl db seed`'s data (qb_seed: 5 symbols x 10 days by default),
    its bars refreshed and its chunks older than COMPRESSION_AFTER_DAYS compressed. The seeded
    template is built once a day (the data is dated back from the day it was made)."""
    yield from _clone_url(_qb_postgres, _qb_seeded_template)


def run_jobs(database_url: str, relation: str | None = None, kind: str | None = None) -> list[int]:
    """Run TimescaleDB policy jobs now in the database of `database_url`: those on `relation` (a
    hypertable or continuous aggregate) and/or of `kind` (compression, retention, refresh). Their ids.
    A test database's jobs are paused, so they run exactly when a test says so."""
    from qbctl.db import testdb

    return _run(testdb.run_jobs, database_url, relation, kind)


@pytest.fixture
def qb_run_job(qb_database_url):
    """run_jobs for this test's database: `qb_run_job("market_data_5m")`, `qb_run_job(kind="compression")`."""

    def run(relation: str | None = None, kind: str | None = None) -> list[int]:
        return run_jobs(qb_database_url, relation, kind)

    return run


@pytest.fixture(scope="session")
def _qb_redis(_qb_settings, _qb_runtime):
    import secrets

    from qbctl.db import testredis

    session = testredis.RedisSession(_qb_settings, f"{secrets.randbits(63):016x}", rt=_qb_runtime)
    _run(session.open)
    yield session
    _run(session.close)


@pytest.fixture(scope="session")
def _qb_redis_index(_qb_redis) -> int:
    """The database this session's tests take in turn (emptied before and after each)."""
    return _run(_qb_redis.claim)


@pytest.fixture
def qb_redis_url(_qb_redis, _qb_redis_index) -> Iterator[str]:
    """The URL of a Redis logical database of this test's own: empty when it starts, flushed after it."""
    from qbctl.db import testredis

    _run(_qb_redis.flush, _qb_redis_index)
    try:
        yield testredis.url(_qb_redis.settings, _qb_redis_index, rt=_qb_redis.rt)
    finally:
        _run(_qb_redis.flush, _qb_redis_index)


@pytest.fixture(scope="session")
def qb_session_redis_url(_qb_redis) -> Iterator[str]:
    """One Redis database for the whole session (each xdist worker has its own), flushed at its end."""
    from qbctl.db import testredis

    index = _run(_qb_redis.claim)
    try:
        yield testredis.url(_qb_redis.settings, index, rt=_qb_redis.rt)
    finally:
        _run(_qb_redis.release, index)
