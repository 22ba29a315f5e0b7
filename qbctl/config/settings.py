"""Settings: one frozen object built once, from defaults < .env < environment < options.

Names are the backend's own (its .env: a contract with the backend); qbctl-only settings carry
a QBCTL_ prefix. SETTINGS below is the single table that config show, env check,
.env.example and the settings table of docs/settings.md are made from.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from qbctl.config import urls
from qbctl.config.sizes import parse_size
from qbctl.config.values import Values
from qbctl.errors import ConfigError
from qbctl.result import Result


@dataclass(frozen=True)
class Setting:
    key: str
    default: str
    kind: str
    help: str
    secret: bool = False
    why: str = ""  # why the default is what it is, where that is not obvious (docs/settings.md, .env.example)


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not re.fullmatch(r"\s*-?\d+\s*", text or ""):
            raise ValueError(f"expected a whole number from {lo} to {hi}")
        value = int(text)
        if not lo <= value <= hi:
            raise ValueError(f"expected a whole number from {lo} to {hi}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    """One of `options`, in any case (info is INFO); the value is the option's own spelling."""
    by_folded = {o.casefold(): o for o in options}

    def parse(text: str) -> str:
        if text.casefold() not in by_folded:
            raise ValueError("expected one of " + ", ".join(options))
        return by_folded[text.casefold()]

    return parse


def _image(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9._/:@-]*", text or "") or text.endswith(":"):
        raise ValueError("expected an image reference such as redis:7-alpine")
    return text


def _address(text: str) -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError("expected an IP address such as 127.0.0.1 (or 0.0.0.0 for every interface)") from None
    return text


def _engine(text: str) -> str:
    try:
        return urls.engine_address(text)
    except ValueError:
        raise ValueError(
            "expected an engine address: unix:///var/run/docker.sock, tcp://HOST:2375 or ssh://[USER@]HOST[:PORT]"
        ) from None


def _text(text: str) -> str:
    return text


PARSERS: dict[str, Callable[[str], Any]] = {
    "pg_url": urls.parse_pg_url,
    "redis_url": urls.parse_redis_url,
    "size": parse_size,
    "port": _int_range(1, 65535),
    "days": _int_range(1, 36500),
    "count": _int_range(1, 100000),
    "connections": _int_range(3, 10000),
    "workers": _int_range(0, 64),
    "seconds": _int_range(1, 3600),
    "image": _image,
    "address": _address,
    "engine": _engine,
    "environment": _choice("development", "test", "staging", "production"),
    "profile": _choice("development", "production"),
    "log_level": _choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    "policy": _choice(
        "allkeys-lru",
        "allkeys-lfu",
        "volatile-lru",
        "volatile-lfu",
        "allkeys-random",
        "volatile-random",
        "volatile-ttl",
        "noeviction",
    ),
    "text": _text,
}

S = Setting
SETTINGS: tuple[Setting, ...] = (
    # The backend's own settings (names are a contract).
    S(
        "DATABASE_URL",
        "postgresql://qb_user:qb_pass@localhost:5432/qb_trading_dev",
        "pg_url",
        "PostgreSQL: user, password, database and host port of the stack; libpq parameters after ? "
        "(sslmode=verify-full, ...) are used as given",
        secret=True,
    ),
    S("REDIS_URL", "redis://localhost:6379/0", "redis_url", "Redis: host port and database index", secret=True),
    S("ENVIRONMENT", "development", "environment", "development, test, staging or production"),
    S("LOG_LEVEL", "INFO", "log_level", "the backend's log level"),
    S("MAX_CANDLES_PER_SYMBOL", "200", "count", "length cap of each candles:{symbol}:{interval} list in Redis"),
    S("DATA_RETENTION_DAYS", "365", "days", "retention of market_data and technical_indicators"),
    S("LOG_RETENTION_DAYS", "30", "days", "retention of system_logs"),
    S("COMPRESSION_AFTER_DAYS", "7", "days", "compress hypertable chunks older than this"),
    S("POSTGRES_SHARED_BUFFERS", "128MB", "size", "PostgreSQL shared_buffers"),
    S("POSTGRES_WORK_MEM", "4MB", "size", "PostgreSQL work_mem (per sort or hash, per connection)"),
    S(
        "POSTGRES_MAX_CONNECTIONS",
        "10",
        "connections",
        "PostgreSQL max_connections (3 of them reserved for superusers: the backend gets the rest)",
        why="under the backend's load (`qbctl budget --load`, 200 symbols x 30 days) a session with TimescaleDB "
        "takes 9-15MB at its peak; with 20 connections the kernel killed PostgreSQL backends, with 10 (7 ordinary "
        "sessions) the peak was 240MB of 300 (docs/benchmarks.md)",
    ),
    S("POSTGRES_MAINTENANCE_WORK_MEM", "16MB", "size", "PostgreSQL maintenance_work_mem (per autovacuum worker)"),
    S("POSTGRES_AUTOVACUUM_MAX_WORKERS", "2", "workers", "PostgreSQL autovacuum_max_workers"),
    S(
        "POSTGRES_MAX_PARALLEL_WORKERS",
        "0",
        "workers",
        "PostgreSQL max_parallel_workers_per_gather (and max_parallel_workers): extra processes a query may start",
        why="each parallel worker is another process as large as a session; PostgreSQL's 2 per query would triple "
        "the sessions' memory",
    ),
    S(
        "TIMESCALEDB_MAX_BACKGROUND_WORKERS",
        "5",
        "workers",
        "timescaledb.max_background_workers: TimescaleDB's launcher, a job scheduler for each database with the "
        "extension, and the policy jobs that may run at once",
        why="the TimescaleDB image creates the extension in `postgres` and in the database of DATABASE_URL at its "
        "first start, so two schedulers run; 5 = the launcher, both schedulers and 2 jobs at once (the others "
        "wait their turn), each counted in the budget. With 4 one job ran at a time; with 2 no compression or "
        "retention job ever launched (`out of background workers`)",
    ),
    S(
        "REDIS_MAX_MEMORY",
        "100MB",
        "size",
        "Redis maxmemory; the container limit (QBCTL_BUDGET_REDIS) must leave room for Redis's overhead",
        why="maxmemory counts only the data: Redis's RSS is about 1.15x it under eviction, plus the pages a "
        "background save copies for its fork; at 120MB Redis reached its 150 MB limit under load and was killed "
        "during a save (`qbctl budget --load`)",
    ),
    S("REDIS_MAXMEMORY_POLICY", "allkeys-lru", "policy", "Redis maxmemory-policy"),
    # qbctl's own settings.
    S(
        "QBCTL_PROJECT",
        "",
        "text",
        "project name labelling every container, volume and network (empty: the project folder's name)",
    ),
    S(
        "QBCTL_PROFILE",
        "development",
        "profile",
        "development (the four services), or production: no UIs, restart policy always, ports on the host's loopback "
        "only (`qbctl up --profile production` for one run; set it in the VM's .env so every command agrees)",
    ),
    S("QBCTL_POSTGRES_IMAGE", "timescale/timescaledb:latest-pg15", "image", "PostgreSQL + TimescaleDB image"),
    S("QBCTL_REDIS_IMAGE", "redis:7-alpine", "image", "Redis image"),
    S("QBCTL_ADMINER_IMAGE", "adminer:latest", "image", "Adminer image (dev UI)"),
    S(
        "QBCTL_REDIS_COMMANDER_IMAGE",
        "ghcr.io/joeferner/redis-commander:0.9.1",
        "image",
        "Redis Commander image (dev UI)",
        why="the project publishes its images on GitHub's registry, by version; rediscommander/redis-commander on "
        "Docker Hub has not been pushed since 2022 and its `latest` no longer works (microsoft/aspire#12935); a "
        "version, not `latest`, so that every machine runs the same one",
    ),
    S("QBCTL_BIND_ADDRESS", "127.0.0.1", "address", "host address PostgreSQL's and Redis's ports are published on"),
    S(
        "QBCTL_UI_BIND_ADDRESS",
        "127.0.0.1",
        "address",
        "host address of the two UIs (they have no login: keep them on loopback)",
    ),
    S("QBCTL_ADMINER_PORT", "8080", "port", "host port of Adminer"),
    S("QBCTL_REDIS_COMMANDER_PORT", "8081", "port", "host port of Redis Commander"),
    S("QBCTL_UP_TIMEOUT", "120", "seconds", "how long up waits for the services to be ready"),
    S(
        "QBCTL_SNAPSHOT_KEEP",
        "5",
        "count",
        "automatic snapshots kept (taken before reset, db reset and restore); the oldest beyond this are "
        "removed, named snapshots never",
    ),
    S(
        "QBCTL_REHEARSE_DOCKER_HOST",
        "unix:///var/run/docker.sock",
        "engine",
        "the engine where `db migrate --rehearse` builds its copy when the project's engine is remote (ssh://, "
        "tcp://): your own, never the VM's",
        why="a copy of the VM's database built on the VM would sit beside the live one within its 1 GB; the copy is "
        "streamed through the ssh tunnel into a container of this engine instead (docs/rehearse.md)",
    ),
    S("QBCTL_BUDGET_TOTAL", "1GB", "size", "memory of the production VM"),
    S("QBCTL_BUDGET_OS", "200MB", "size", "share of the OS and system services"),
    S("QBCTL_BUDGET_POSTGRES", "300MB", "size", "share of PostgreSQL (its container's memory limit)"),
    S("QBCTL_BUDGET_REDIS", "150MB", "size", "share of Redis (its container's memory limit)"),
    S("QBCTL_BUDGET_BACKEND", "250MB", "size", "share of the Python backend"),
    S("QBCTL_BUDGET_HEADROOM", "100MB", "size", "headroom left free"),
    S(
        "QBCTL_POSTGRES_BACKEND_OVERHEAD",
        "5MB",
        "size",
        "private memory of one PostgreSQL session besides work_mem, at its peak (the budget's model)",
        why="measured under the backend's load with TimescaleDB (catalog and chunk caches, plans, executor state): "
        "about 10MB, not the 2MB of a bare backend",
    ),
    S("QBCTL_ADMINER_MEMORY", "64MB", "size", "memory limit of Adminer (dev only, outside the budget)"),
    S(
        "QBCTL_REDIS_COMMANDER_MEMORY",
        "160MB",
        "size",
        "memory limit of Redis Commander (dev only, outside the budget)",
    ),
)
BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}


def mask_value(key: str, raw: str) -> str:
    """A setting's text as it may be printed: passwords in URLs replaced by ***."""
    if not BY_KEY.get(key, S(key, "", "text", "")).secret:
        return raw
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", raw)


@dataclass(frozen=True)
class Settings:
    """The resolved settings: `values` typed, one attribute per setting (`settings.values.qbctl_up_timeout`);
    `raw` and `sources` by key, for what prints them (config show, env check)."""

    values: Values
    raw: Mapping[str, str]
    sources: Mapping[str, str]
    project: str
    root: Path
    env_file: Path | None
    # unknown keys in the env file that look like a setting -> that setting
    typos: Mapping[str, str] = field(default_factory=dict)
    marker: str | None = "named"  # what marks root as the project (find_project); None: no project there
    project_source: str = ""  # how the project name was chosen, in words (status and config show say it)

    @property
    def is_project(self) -> bool:
        """Whether qbctl runs in a project: a marked folder, or a project named explicitly."""
        return self.marker is not None or self.project_source.startswith("named by")

    @property
    def pg(self) -> urls.PgUrl:
        return self.values.database_url

    @property
    def redis(self) -> urls.RedisUrl:
        return self.values.redis_url

    def secrets(self) -> list[str]:
        return [s for s in (self.pg.password, self.redis.password) if s]

    def masked(self, key: str) -> str:
        return mask_value(key, self.raw[key])


_TOOL_SECTION = re.compile(r"^\s*\[\s*tool\s*\.\s*qbctl\s*[\].]", re.M)


@dataclass(frozen=True)
class ProjectFolder:
    """Where qbctl found the project: its folder and what marks it (None: no project there)."""

    root: Path
    marker: str | None


def marker_of(folder: Path) -> str | None:
    """What makes `folder` a qbctl project, or None."""
    if (folder / "sql" / "schema").is_dir():
        return "sql/schema"
    if (folder / ".env").is_file():
        return ".env"
    try:
        text = (folder / "pyproject.toml").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return "[tool.qbctl] in pyproject.toml" if _TOOL_SECTION.search(text) else None


def find_project(start: Path, project_dir: Path | str | None = None) -> ProjectFolder:
    """The project folder: `project_dir` when given, else the nearest folder at or above `start`
    that holds a marker (a .env, a sql/schema folder or a [tool.qbctl] section in pyproject.toml).
    The search stops at the repository's root (the folder
    holding .git) and never takes the home folder from below it: a stray ~/.env marks nothing."""
    if project_dir is not None:
        folder = Path(project_dir).expanduser()
        if not folder.is_dir():
            raise ConfigError(
                f"project folder {project_dir} does not exist or is not a folder",
                hint="point --project-dir (or QBCTL_PROJECT_DIR) at the project's folder",
            )
        return ProjectFolder(folder.resolve(), "named")
    home = Path(os.path.expanduser("~"))
    for folder in (start, *start.parents):
        if folder != start and folder in (home, Path(folder.anchor)):
            break
        marker = marker_of(folder)
        if marker:
            return ProjectFolder(folder, marker)
        if (folder / ".git").exists():
            break
    return ProjectFolder(start, None)


def project_name(text: str, where: str = "project name") -> str:
    """A Docker-safe name: lower case letters, digits, - and _."""
    name = re.sub(r"[^a-z0-9_-]", "", text.lower()).lstrip("_-")
    if not name:
        raise ConfigError(
            f"{where} {text!r}: no letters or digits to name a project with",
            hint="use letters, digits, - or _ (--project NAME or QBCTL_PROJECT)",
        )
    return name


def read_env_file(path: Path) -> dict[str, str]:
    """The .env file's values (python-dotenv), refusing lines it cannot parse."""
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    try:
        text = path.read_text(encoding="utf-8-sig")
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not an env file", hint="point --env-file at a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read {path}: {reason}", hint="fix the file or point --env-file elsewhere") from None
    import io

    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            shown = binding.original.string.strip().splitlines()[0][:60]
            raise ConfigError(
                f"{path} line {binding.original.line}: cannot parse {shown!r}", hint="write KEY=value, one per line"
            )
    values = dotenv_values(stream=io.StringIO(text), interpolate=True)
    return {k: (v if v is not None else "") for k, v in values.items()}


def load(
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    project: str | None = None,
    cwd: Path | None = None,
    overrides: Mapping[str, str] | None = None,
    project_dir: Path | None = None,
) -> Settings:
    """Resolve every setting; raise ConfigError naming every bad value, one per line.

    The project folder (find_project) is found first: its .env is the default env file.
    QBCTL_PROJECT_DIR is read from the environment only (it says where .env is)."""
    cwd = cwd or Path.cwd()
    environ = os.environ if environ is None else environ
    named_dir = project_dir if project_dir is not None else (environ.get("QBCTL_PROJECT_DIR") or None)
    folder = find_project(cwd, named_dir)
    if folder.marker == "named":
        folder = ProjectFolder(folder.root, "--project-dir" if project_dir is not None else "QBCTL_PROJECT_DIR")
    root = folder.root
    explicit = env_file is not None
    path: Path | None = Path(env_file) if env_file is not None else root / ".env"
    file_values: dict[str, str] = {}
    file_name = ""
    if path is not None and (path.exists() or explicit):
        if not path.exists():
            raise ConfigError(f"env file {path} does not exist", hint="create it (see .env.example) or drop --env-file")
        file_values = read_env_file(path)
        file_name = str(env_file) if explicit else _shown_path(path, cwd)
    else:
        path = None

    raw: dict[str, str] = {}
    sources: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    problems: list[str] = []
    for s in SETTINGS:
        if overrides and s.key in overrides:
            raw[s.key], sources[s.key] = overrides[s.key], "option"
        elif s.key in environ:
            raw[s.key], sources[s.key] = environ[s.key], "environment"
        elif s.key in file_values:
            raw[s.key], sources[s.key] = file_values[s.key], file_name
        else:
            raw[s.key], sources[s.key] = s.default, "default"
        try:
            parsed[s.key] = PARSERS[s.kind](raw[s.key].strip())
        except ValueError as exc:
            where = f" (from {sources[s.key]})" if sources[s.key] != "default" else ""
            problems.append(f"{s.key}={mask_value(s.key, raw[s.key])!r}{where}: {exc}")
    if not problems:
        values = Values(**{s.key.lower(): parsed[s.key] for s in SETTINGS})
        problems += _cross_checks(values)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(
            "\n".join(problems),
            hint="fix the value in .env or the environment" + more + "; `qbctl env check` lists every setting",
        )
    if project:
        name, how = project_name(project, "--project"), "named by --project"
    elif values.qbctl_project.strip():
        name = project_name(values.qbctl_project, f"QBCTL_PROJECT= (from {sources['QBCTL_PROJECT']})")
        how = f"named by QBCTL_PROJECT (from {sources['QBCTL_PROJECT']})"
    else:
        name = project_name(root.name, f"the folder name {root} (set QBCTL_PROJECT)")
        how = f"the folder {root}" + (
            f" ({folder.marker})"
            if folder.marker
            else ", which is no project (no .env, sql/schema or [tool.qbctl] in pyproject.toml there or above it)"
        )
    return Settings(values, raw, sources, name, root, path, did_you_mean(file_values), folder.marker, how)


def _shown_path(path: Path, cwd: Path) -> str:
    """The env file as a user would name it from where they are: .env, ../.env."""
    try:
        return os.path.relpath(path, cwd)
    except ValueError:
        return str(path)


def suggestion(key: str) -> str | None:
    """The setting an unknown key was probably meant to be (REDIS_MAXMEMORY -> REDIS_MAX_MEMORY)."""
    import difflib

    if key == "QBCTL_PROJECT_DIR":  # not a misspelt QBCTL_PROJECT: a setting of the environment only
        return None
    squeezed = {s.key.replace("_", ""): s.key for s in SETTINGS}
    if key.upper().replace("_", "") in squeezed:
        return squeezed[key.upper().replace("_", "")]
    close = difflib.get_close_matches(key.upper(), BY_KEY, n=1, cutoff=0.85)
    return close[0] if close else None


def did_you_mean(file_values: Mapping[str, str]) -> dict[str, str]:
    """Unknown keys of an env file that look like a setting (-> that setting; "" for a key read from
    the environment only). Other unknown keys are the backend's own (KIS_APP_KEY, ...) and are left
    alone; `qbctl env check` lists them all."""
    out = {}
    for key in file_values:
        if key == "QBCTL_PROJECT_DIR":  # it says where the env file is: read from the environment only
            out[key] = ""
        elif key not in BY_KEY:
            near = suggestion(key)
            if near:
                out[key] = near
    return out


def _cross_checks(values: Values) -> list[str]:
    ports = {
        "DATABASE_URL": values.database_url.port if values.database_url.is_local else None,
        "REDIS_URL": values.redis_url.port if values.redis_url.is_local else None,
        "QBCTL_ADMINER_PORT": values.qbctl_adminer_port,
        "QBCTL_REDIS_COMMANDER_PORT": values.qbctl_redis_commander_port,
    }
    seen: dict[int, str] = {}
    problems = []
    for key, port in ports.items():
        if port is None:
            continue
        if port in seen:
            problems.append(f"{key} uses port {port}, which {seen[port]} uses already: give each service its own port")
        seen[port] = key
    return problems


@dataclass
class ConfigShown(Result):
    """`qbctl config show`: every setting, masked, with where its value came from."""

    project: str
    root: str
    env_file: str | None
    settings: list[dict]
    project_source: str = ""
    schema: str = ""  # the sql/ folder the db commands use
    ok: bool = True
    error: ConfigError | None = None


def shown(settings: Settings, schema: str = "") -> ConfigShown:
    """`schema`: the sql/ folder the db commands use, in words (db.files.describe)."""
    rows = [{"key": s.key, "value": settings.masked(s.key), "source": settings.sources[s.key]} for s in SETTINGS]
    return ConfigShown(
        settings.project,
        str(settings.root),
        str(settings.env_file) if settings.env_file else None,
        rows,
        settings.project_source,
        schema,
    )
