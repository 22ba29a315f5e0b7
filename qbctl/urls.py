"""Parsing and masking of the two connection URLs (DATABASE_URL, REDIS_URL)."""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", ""})


@dataclass(frozen=True)
class PgUrl:
    user: str
    password: str
    host: str
    port: int
    dbname: str
    query: str = ""  # libpq parameters after "?", such as sslmode=verify-full: kept, never dropped

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS

    def dsn(self, host: str | None = None, port: int | None = None, dbname: str | None = None) -> str:
        """A libpq URL (driver suffixes such as +asyncpg removed)."""
        auth = quote(self.user, safe="")
        if self.password:
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
class RedisUrl:
    host: str
    port: int
    db: int
    password: str
    username: str = ""

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS

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
    scheme = parts.scheme.split("+", 1)[0]  # postgresql+asyncpg:// as SQLAlchemy writes it
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
    return PgUrl(unquote(parts.username), unquote(parts.password or ""), parts.hostname, port or 5432, dbname,
                 parts.query)


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
    return RedisUrl(parts.hostname, port or 6379, int(path), unquote(parts.password or ""),
                    unquote(parts.username or ""))


def mask_secrets(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of a secret (and its URL-quoted form) by ***."""
    for s in secrets:
        if s and len(s) >= 3:
            text = text.replace(s, "***").replace(quote(s, safe=""), "***")
    return text
