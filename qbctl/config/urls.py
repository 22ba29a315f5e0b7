"""Parsing and masking of the two connection URLs (DATABASE_URL, REDIS_URL)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

# The one definition of "the stack runs on this machine": a URL naming one of these hosts is a
# service qbctl runs; any other host is external (staging, a managed database) and left alone.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", ""})


def connect_host(host: str) -> str:
    """The address to connect to: the published ports listen on IPv4 loopback (QBCTL_BIND_ADDRESS),
    and `localhost` may resolve to ::1 first."""
    return "127.0.0.1" if host in ("localhost", "0.0.0.0", "") else host


# libpq's connection parameters (PostgreSQL 18). In a SQLAlchemy URL (postgresql+asyncpg://) the
# query belongs to the driver: these are kept, the driver's own (ssl=, prepared_statement_...) dropped.
LIBPQ_PARAMS = frozenset(
    """
host hostaddr port dbname user password passfile require_auth channel_binding connect_timeout
client_encoding options application_name fallback_application_name keepalives keepalives_idle
keepalives_interval keepalives_count tcp_user_timeout replication gssencmode sslmode sslnegotiation
sslcompression sslcert sslkey sslkeylogfile sslpassword sslcertmode sslrootcert sslcrl sslcrldir sslsni
requirepeer ssl_min_protocol_version ssl_max_protocol_version krbsrvname gsslib gssdelegation service
target_session_attrs load_balance_hosts min_protocol_version max_protocol_version
""".split()
)


class _OnAHost:
    """What both URLs say about where their service is (its dataclass gives `host`)."""

    host: str

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS

    @property
    def connect_host(self) -> str:
        return connect_host(self.host)


@dataclass(frozen=True)
class PgUrl(_OnAHost):
    user: str
    password: str
    host: str
    port: int
    dbname: str
    query: str = ""  # libpq parameters after "?", such as sslmode=verify-full: kept, never dropped

    def dsn(
        self, host: str | None = None, port: int | None = None, dbname: str | None = None, password: bool = True
    ) -> str:
        """A libpq URL (driver suffixes such as +asyncpg removed); without the password if asked."""
        auth = quote(self.user, safe="")
        if self.password and password:
            auth += ":" + quote(self.password, safe="")
        h = host or self.host
        if ":" in h:
            h = f"[{h}]"
        url = f"postgresql://{auth}@{h}:{port or self.port}/{quote(dbname or self.dbname, safe='')}"
        return f"{url}?{self.query}" if self.query else url

    def masked(self) -> str:
        auth = self.user + (":***" if self.password else "")
        return f"postgresql://{auth}@{self.host}:{self.port}/{self.dbname}"


@dataclass(frozen=True)
class RedisUrl(_OnAHost):
    host: str
    port: int
    db: int
    password: str
    username: str = ""

    def masked(self) -> str:
        auth = ""
        if self.username or self.password:
            auth = f"{self.username}{':***' if self.password else ''}@"
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"


def _split(text: str):
    parts = urlsplit(text.strip())
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    return parts, port


def parse_pg_url(text: str) -> PgUrl:
    parts, port = _split(text)
    scheme, driver = (parts.scheme.split("+", 1) + [""])[:2]  # postgresql+asyncpg:// as SQLAlchemy writes it
    if scheme not in ("postgresql", "postgres"):
        raise ValueError("expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME")
    if not parts.hostname:
        raise ValueError("the URL has no host: expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME")
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535")
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname or "/" in dbname:
        raise ValueError("the URL names no database: expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME")
    if not parts.username:
        raise ValueError("the URL names no user: expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME")
    params = [p for p in parts.query.split("&") if p]
    unknown = [p.split("=", 1)[0] for p in params if p.split("=", 1)[0] not in LIBPQ_PARAMS]
    if unknown and not driver:
        raise ValueError(
            f"{', '.join(unknown)} after ? is not a libpq parameter (sslmode=require, connect_timeout=10, ... are)"
        )
    query = "&".join(p for p in params if p.split("=", 1)[0] in LIBPQ_PARAMS)
    return PgUrl(unquote(parts.username), unquote(parts.password or ""), parts.hostname, port or 5432, dbname, query)


def parse_redis_url(text: str) -> RedisUrl:
    parts, port = _split(text)
    if parts.scheme != "redis":
        raise ValueError("expected redis://HOST:PORT/DB")
    if not parts.hostname:
        raise ValueError("the URL has no host: expected redis://HOST:PORT/DB")
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535")
    path = parts.path.lstrip("/") or "0"
    if not path.isdigit() or int(path) > 15:
        raise ValueError("the database index must be a number from 0 to 15")
    return RedisUrl(
        parts.hostname, port or 6379, int(path), unquote(parts.password or ""), unquote(parts.username or "")
    )


ENGINE_SCHEMES = ("unix://", "npipe://", "tcp://", "http://", "https://", "ssh://")


def engine_address(url: str) -> str:
    """An engine address as DOCKER_HOST names one (unix://, npipe://, tcp://, http(s)://, ssh://[USER@]HOST[:PORT],
    or a socket's path), as transport.target reads it: the URL (a path as unix://PATH); ValueError when it is none.
    Here, below the transport layer, so that a setting naming an engine is checked when settings are read."""
    url = url.strip()
    if url.startswith("/"):
        return f"unix://{url}"
    if not url.startswith(ENGINE_SCHEMES):
        raise ValueError(f"{url!r} is not an engine address")
    if url.startswith("ssh://"):
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == -1 or parts.password or parts.query:
            raise ValueError(f"{url!r} is not an ssh address")
    return url
