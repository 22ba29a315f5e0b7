from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from qbctl.config import settings as S
from qbctl.config.sizes import MB
from qbctl.errors import ConfigError


def load(env=None, **kw):
    return S.load(environ=env or {}, cwd=kw.pop("cwd", Path("/nonexistent-qbctl-test")), **kw)


def test_defaults_need_no_env_file():
    s = load()
    assert s.pg.user == "qb_user" and s.pg.dbname == "qb_trading_dev" and s.pg.port == 5432
    assert s.redis.port == 6379 and s.values.postgres_shared_buffers == 128 * MB
    assert s.values.qbctl_bind_address == "127.0.0.1"
    assert set(s.sources.values()) == {"default"}


def test_environment_wins_over_env_file_over_defaults(tmp_path):
    (tmp_path / ".env").write_text("POSTGRES_WORK_MEM=8MB\nLOG_LEVEL=DEBUG\nFOO=bar\n")
    s = load({"LOG_LEVEL": "ERROR"}, cwd=tmp_path)
    assert s.values.postgres_work_mem == 8 * MB and s.sources["POSTGRES_WORK_MEM"] == ".env"
    assert s.values.log_level == "ERROR" and s.sources["LOG_LEVEL"] == "environment"
    assert s.sources["REDIS_URL"] == "default"


def test_env_file_interpolation_and_bom(tmp_path):
    (tmp_path / ".env").write_bytes(
        "\ufeffPORT_PG=5544\nDATABASE_URL=postgresql://u:p@localhost:${PORT_PG}/db\n".encode()
    )
    assert load(cwd=tmp_path).pg.port == 5544


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("REDIS_MAX_MEMORY", "abc", "expected a size"),
        ("REDIS_MAX_MEMORY", "-1MB", "expected a size"),
        ("POSTGRES_WORK_MEM", "4XB", "unknown unit"),
        ("DATABASE_URL", "mysql://u:p@h/db", "expected postgresql://"),
        ("DATABASE_URL", "postgresql://u:p@/db", "no host"),
        ("DATABASE_URL", "postgresql://u:p@h:99999/db", "port must be"),
        ("DATABASE_URL", "postgresql://u:p@h:5432", "names no database"),
        ("REDIS_URL", "http://localhost:6379", "expected redis://"),
        ("REDIS_URL", "redis://localhost:6379/99", "database index"),
        ("QBCTL_ADMINER_PORT", "0", "from 1 to 65535"),
        ("QBCTL_ADMINER_PORT", "70000", "from 1 to 65535"),
        ("DATA_RETENTION_DAYS", "-5", "whole number"),
        ("ENVIRONMENT", "prod", "one of"),
        ("QBCTL_BIND_ADDRESS", "localhost", "IP address"),
        ("QBCTL_REDIS_IMAGE", "Redis Latest", "image reference"),
    ],
)
def test_bad_values_name_key_value_and_expectation(key, value, expected):
    with pytest.raises(ConfigError) as e:
        load({key: value})
    line = e.value.message
    assert line.startswith(f"{key}=") and expected in line and "(from environment)" in line
    assert e.value.exit_code == 2


def test_every_bad_value_is_reported_and_passwords_masked():
    with pytest.raises(ConfigError) as e:
        load({"DATABASE_URL": "postgresql://u:hunter22@/db", "REDIS_MAX_MEMORY": "lots"})
    lines = e.value.message.splitlines()
    assert len(lines) == 2 and "hunter22" not in e.value.message and "u:***@" in lines[0]
    assert "1 more" in e.value.hint


def test_two_services_on_one_port_is_a_config_error():
    with pytest.raises(ConfigError, match="QBCTL_ADMINER_PORT uses port 6379"):
        load({"QBCTL_ADMINER_PORT": "6379"})


def test_a_remote_database_is_not_a_port_clash():
    s = load({"DATABASE_URL": "postgresql://u:p@db.staging.example:8080/qb", "QBCTL_ADMINER_PORT": "8080"})
    assert not s.pg.is_local


def test_malformed_env_file_names_the_line(tmp_path):
    (tmp_path / ".env").write_text("LOG_LEVEL=INFO\nthis is not a setting\n")
    with pytest.raises(ConfigError, match=r"\.env line 2: cannot parse 'this is not a setting'"):
        load(cwd=tmp_path)


def test_unreadable_and_missing_env_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(env_file=tmp_path / "nope.env")
    with pytest.raises(ConfigError, match="is a directory"):
        load(env_file=tmp_path)
    (tmp_path / "bin.env").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(env_file=tmp_path / "bin.env")


def test_sqlalchemy_style_url_is_accepted():
    s = load({"DATABASE_URL": "postgresql+asyncpg://a:b@localhost:6543/x"})
    assert s.pg.dsn() == "postgresql://a:b@localhost:6543/x"
    assert s.pg.masked() == "postgresql://a:***@localhost:6543/x"


def test_libpq_parameters_in_the_url_are_kept():
    s = load({"DATABASE_URL": "postgresql://a:b@db.example.com/x?sslmode=verify-full&sslrootcert=/ca.pem"})
    assert s.pg.dsn() == "postgresql://a:b@db.example.com:5432/x?sslmode=verify-full&sslrootcert=/ca.pem"
    assert s.pg.masked() == "postgresql://a:***@db.example.com:5432/x"
    # a SQLAlchemy URL's query is its driver's: libpq's parameters are kept, the driver's own dropped
    s = load(
        {"DATABASE_URL": "postgresql+asyncpg://a:b@h/x?ssl=require&sslmode=require&prepared_statement_cache_size=0"}
    )
    assert s.pg.dsn() == "postgresql://a:b@h:5432/x?sslmode=require"
    with pytest.raises(ConfigError, match=r"DATABASE_URL=.*ssl after \? is not a libpq parameter"):
        load({"DATABASE_URL": "postgresql://a:b@h/x?ssl=require"})


def test_project_name_from_folder_and_option(tmp_path):
    folder = tmp_path / "QB Backend"
    (folder / "sql" / "schema").mkdir(parents=True)
    sub = folder / "app"
    sub.mkdir()
    s = load(cwd=sub)
    assert s.root == folder and s.project == "qbbackend"
    assert load({"QBCTL_PROJECT": "ci-42"}).project == "ci-42"
    assert load(project="Mine").project == "mine"
    with pytest.raises(ConfigError):
        load(project="!!!")


@hsettings(max_examples=300, deadline=None)
@given(key=st.sampled_from([s.key for s in S.SETTINGS]), value=st.text(max_size=40))
def test_any_value_gives_settings_or_a_clean_config_error(key, value):
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        load({key: value})
    except ConfigError as e:
        assert e.message.startswith(key) or "port" in e.message, e.message


@pytest.mark.parametrize("raw,value", [("info", "INFO"), ("Warning", "WARNING"), ("DEBUG", "DEBUG")])
def test_choices_are_case_insensitive_and_keep_their_spelling(raw, value):
    assert load({"LOG_LEVEL": raw}).values.log_level == value
    assert load({"ENVIRONMENT": "Production"}).values.environment == "production"
    assert load({"REDIS_MAXMEMORY_POLICY": "AllKeys-LFU"}).values.redis_maxmemory_policy == "allkeys-lfu"


def test_binary_units_are_accepted():
    s = load({"REDIS_MAX_MEMORY": "100MiB", "QBCTL_BUDGET_TOTAL": "1GiB"})
    assert s.values.redis_max_memory == 100 * MB and s.values.qbctl_budget_total == 1024 * MB


def test_the_source_names_the_env_file_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "other.env").write_text("LOG_LEVEL=loud\n")
    with pytest.raises(ConfigError, match=r"LOG_LEVEL='loud' \(from other.env\)"):
        S.load(env_file=Path("other.env"), environ={}, cwd=tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "dev.env").write_text("LOG_LEVEL=debug\n")
    assert S.load(env_file=Path("conf/dev.env"), environ={}, cwd=tmp_path).sources["LOG_LEVEL"] == "conf/dev.env"
    sub = tmp_path / "app"
    sub.mkdir()
    (tmp_path / ".env").write_text("LOG_LEVEL=error\n")
    s = S.load(environ={}, cwd=sub)  # the project folder's .env, named from where the user is
    assert s.root == tmp_path and s.sources["LOG_LEVEL"] == "../.env" and s.values.log_level == "ERROR"


def test_what_marks_a_project(tmp_path):
    repo = tmp_path / "backend"
    deep = repo / "app" / "api"
    deep.mkdir(parents=True)
    (repo / ".git").mkdir()
    assert S.find_project(deep).marker is None  # a repository with no marker is no project
    (repo / "pyproject.toml").write_text("[project]\nname = 'qb'\n")
    assert S.find_project(deep).marker is None  # a pyproject.toml alone is not one
    (repo / "pyproject.toml").write_text("[project]\nname = 'qb'\n\n[tool.qbctl]\n")
    assert S.find_project(deep) == S.ProjectFolder(repo, "[tool.qbctl] in pyproject.toml")
    (repo / "app" / ".env").write_text("LOG_LEVEL=INFO\n")
    assert S.find_project(deep) == S.ProjectFolder(repo / "app", ".env")  # the nearest one
    (repo / "app" / ".env").unlink()
    (repo / "tools" / "qbctl" / "sql" / "schema").mkdir(parents=True)
    assert S.find_project(deep).root == repo  # qbctl's own checkout inside is not on the way up
    (tmp_path / ".env").write_text("X=1\n")
    assert S.find_project(deep).root == repo  # the search stops at the repository's root
    s = S.load(environ={}, cwd=deep)
    assert s.project == "backend" and s.is_project and "[tool.qbctl]" in s.project_source


def test_no_project_outside_any_marker_unless_named(tmp_path):
    (tmp_path / ".git").mkdir()
    s = S.load(environ={}, cwd=tmp_path)
    assert not s.is_project and "which is no project" in s.project_source
    assert S.load(environ={"QBCTL_PROJECT": "qb"}, cwd=tmp_path).is_project
    assert S.load(environ={}, cwd=tmp_path, project="qb").is_project
    named = S.load(environ={"QBCTL_PROJECT_DIR": str(tmp_path)}, cwd=Path("/"))
    assert named.is_project and named.root == tmp_path and named.project_source.endswith("(QBCTL_PROJECT_DIR)")
    with pytest.raises(ConfigError, match="does not exist or is not a folder"):
        S.load(environ={}, cwd=tmp_path, project_dir=tmp_path / "nope")


def test_a_stray_env_file_in_the_home_folder_marks_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".env").write_text("X=1\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert S.find_project(scratch).marker is None
    assert S.find_project(tmp_path).marker == ".env"  # in the home folder itself it does


def test_the_project_folder_setting_in_an_env_file_is_no_typo_of_another():
    assert S.did_you_mean({"QBCTL_PROJECT_DIR": "/x", "REDIS_MAXMEMORY": "1"}) == {
        "QBCTL_PROJECT_DIR": "",
        "REDIS_MAXMEMORY": "REDIS_MAX_MEMORY",
    }
    assert S.suggestion("QBCTL_PROJECT_DIR") is None
