"""A minimal libpq client, for answering `qbctl db migrate` without importing psycopg.

`import psycopg` costs 70-90 ms (it brings asyncio, ssl, logging and importlib.metadata);
loading libpq itself costs about 5 ms. The common migrate, "nothing to do", needs a handful of
constant queries, so it runs on this client and psycopg is imported only when there is work.

It loads the system's libpq by its stable soname (libpq.so.5, as psycopg's own ctypes
implementation finds it), so a URL, the PG* environment, TLS and authentication mean what they
mean to psycopg. Where there is none (a pip-only install on a machine without the PostgreSQL
client library), `connect` returns None and the caller takes the psycopg path. It is
deliberately small: constant SQL, text results, no parameters, no transactions. Anything it
cannot do returns None, and the caller takes the psycopg path, which owns the waiting and the
error messages.

The loaded library's handle (`_lib`) is the one module-level state kept outside the command's Runtime, because
dlopen is process-wide by nature and the handle holds no per-command state and nothing to close.
"""

from __future__ import annotations

try:
    import ctypes

    HAVE_CTYPES = True
except ImportError:  # an interpreter built without _ctypes: psycopg does all the work
    HAVE_CTYPES = False

CONNECTION_OK = 0
PGRES_COMMAND_OK, PGRES_TUPLES_OK = 1, 2
# the loaded CDLL; False: not looked for yet; None: none here
_lib: ctypes.CDLL | bool | None = False if HAVE_CTYPES else None


SONAMES = ("libpq.so.5", "libpq.5.dylib")  # the ABI name of every libpq since PostgreSQL 8.x


def _load():
    global _lib
    if _lib is False:
        _lib = None
        _P = ctypes.c_void_p
        for path in SONAMES:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for name, res, args in (
                ("PQconnectdbParams", _P, [ctypes.POINTER(ctypes.c_char_p)] * 2 + [ctypes.c_int]),
                ("PQstatus", ctypes.c_int, [_P]),
                ("PQfinish", None, [_P]),
                ("PQexec", _P, [_P, ctypes.c_char_p]),
                ("PQresultStatus", ctypes.c_int, [_P]),
                ("PQntuples", ctypes.c_int, [_P]),
                ("PQnfields", ctypes.c_int, [_P]),
                ("PQgetvalue", ctypes.c_char_p, [_P, ctypes.c_int, ctypes.c_int]),
                ("PQgetisnull", ctypes.c_int, [_P, ctypes.c_int, ctypes.c_int]),
                ("PQclear", None, [_P]),
            ):
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = res, args
            _lib = lib
            break
    return _lib


class Failed(Exception):
    """A statement the server refused."""


class Connection:
    def __init__(self, lib, handle: int):
        self._lib = lib
        self._handle: int | None = handle

    def rows(self, sql: str) -> list[tuple[str | None, ...]]:
        """The rows of one statement as text (None for NULL); Failed when the server refused it."""
        lib = self._lib
        res = lib.PQexec(self._handle, sql.encode())
        try:
            status = lib.PQresultStatus(res)
            if status == PGRES_COMMAND_OK:
                return []
            if status != PGRES_TUPLES_OK:
                raise Failed(sql)
            fields = range(lib.PQnfields(res))
            # "replace": a SQL_ASCII database may hold bytes that are not UTF-8; text is text, never a crash
            return [
                tuple(
                    None if lib.PQgetisnull(res, r, c) else lib.PQgetvalue(res, r, c).decode("utf-8", "replace")
                    for c in fields
                )
                for r in range(lib.PQntuples(res))
            ]
        finally:
            lib.PQclear(res)

    def close(self) -> None:
        if self._handle:
            self._lib.PQfinish(self._handle)
            self._handle = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(dsn: str, timeout: int = 3) -> Connection | None:
    """A connection to `dsn` (a URL or key=value string), or None: no libpq, or it could not connect."""
    lib = _load()
    if lib is None:
        return None
    params = {"dbname": dsn, "connect_timeout": str(timeout), "application_name": "qbctl", "client_encoding": "UTF8"}
    keys = (ctypes.c_char_p * (len(params) + 1))(*(k.encode() for k in params), None)
    values = (ctypes.c_char_p * (len(params) + 1))(*(v.encode() for v in params.values()), None)
    handle = lib.PQconnectdbParams(keys, values, 1)  # 1: dbname may be a URL, expanded like psycopg does
    if lib.PQstatus(handle) != CONNECTION_OK:
        lib.PQfinish(handle)
        return None
    return Connection(lib, handle)
