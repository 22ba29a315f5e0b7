"""A few raw HTTP/1.1 GETs to a local Docker engine's unix socket: no Docker SDK, no http.client.

For the path that must cost almost nothing (a warm `up`, qbctl.stack.warm): the SDK with requests
and urllib3 takes ~100 ms to import, http.client pulls in email and ssl. One connection, kept alive
between requests, as the engine allows. Anything unusual (no socket, a refusal, an answer this
reader does not understand, an engine that is not Docker's) is `RawUnavailable`, and the caller
takes the SDK's way, which says what is wrong in words.
"""

from __future__ import annotations

import json
import socket

TIMEOUT = 2.0  # seconds: what engine.CONNECT_TIMEOUT allows a local engine
MAX_BODY = 8 * 2**20


class RawUnavailable(Exception):
    """The quick way cannot tell: the caller takes the ordinary one."""


class RawEngine:
    def __init__(self, socket_path: str, timeout: float = TIMEOUT) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(socket_path)
        except OSError as exc:
            self._sock.close()
            raise RawUnavailable(f"cannot connect to {socket_path}: {exc}") from None
        self._buf = b""
        self.server = ""  # the engine's Server header: "Docker/20.10.24 (linux)"

    def __enter__(self) -> RawEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def get_json(self, path: str, missing_ok: bool = False):
        """The decoded JSON of GET path; None for a 404 when missing_ok; RawUnavailable otherwise."""
        status, body = self.get(path)
        if status == 404 and missing_ok:
            return None
        return decode(status, body, path)

    def get(self, path: str) -> tuple[int, bytes]:
        return self.get_many([path])[0]

    def get_many(self, paths: list[str]) -> list[tuple[int, bytes]]:
        """(status, body) of each GET, the requests sent at once and answered in turn on the connection
        (HTTP/1.1 pipelining, which the engine's Go server serves in order): one wait, not one each."""
        try:
            self._sock.sendall(
                b"".join(f"GET {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: qbctl\r\n\r\n".encode() for path in paths)
            )
        except OSError as exc:
            raise RawUnavailable(f"GET {paths[0]}: {exc}") from None
        return [self._answer(path) for path in paths]

    def _answer(self, path: str) -> tuple[int, bytes]:
        try:
            head = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
            parts = head[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise RawUnavailable(f"GET {path}: an answer that is not HTTP/1.x")
            headers = {}
            for line in head[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            self.server = headers.get("server", self.server)
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body = self._chunked()
            elif "content-length" in headers:
                body = self._exactly(int(headers["content-length"]))
            else:
                raise RawUnavailable(f"GET {path}: no length to the answer")
            if headers.get("connection", "").lower() == "close":
                self._sock.close()  # a next request fails in words, not by hanging
            return int(parts[1]), body
        except (OSError, ValueError) as exc:  # a timeout, a reset, a length that is no number
            raise RawUnavailable(f"GET {path}: {exc}") from None

    def _fill(self) -> None:
        data = self._sock.recv(65536)
        if not data:
            raise RawUnavailable("the engine closed the connection")
        self._buf += data
        if len(self._buf) > MAX_BODY:
            raise RawUnavailable("an answer larger than expected")

    def _until(self, mark: bytes) -> bytes:
        while mark not in self._buf:
            self._fill()
        out, _, self._buf = self._buf.partition(mark)
        return out

    def _exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self._until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self._until(b"\r\n")  # no trailers from the engine: the blank line that ends the body
                return body
            body += self._exactly(size)
            self._exactly(2)
            if len(body) > MAX_BODY:
                raise RawUnavailable("an answer larger than expected")


def decode(status: int, body: bytes, path: str = "the engine"):
    """An answer's JSON; RawUnavailable for any status but 200, or a body that is not JSON."""
    if status != 200:
        raise RawUnavailable(f"GET {path}: HTTP {status}")
    try:
        return json.loads(body)
    except ValueError:
        raise RawUnavailable(f"GET {path}: not JSON") from None


def query(filters: dict) -> str:
    """The engine's `filters` query parameter (JSON, URL-encoded)."""
    from urllib.parse import quote

    return quote(json.dumps(filters, separators=(",", ":")), safe="")


def http_statuses(endpoints: list[tuple[str, int]], timeout: float = TIMEOUT) -> list[int | None]:
    """The status of GET / on each (host, port) (the UIs' readiness, as probes.http judges it: 200), None
    where nothing answers in HTTP/1.x."""
    return http_statuses_end(http_statuses_start(endpoints, timeout))


def http_statuses_start(endpoints: list[tuple[str, int]], timeout: float = TIMEOUT) -> list[socket.socket | None]:
    """Every request sent before any answer is read (http_statuses_end), so the servers work at the same
    time, and while the caller does something else."""
    socks: list[socket.socket | None] = []
    for host, port in endpoints:
        try:
            # bytes: a str host is encoded with the idna codec, whose import costs more than the request
            # (typeshed allows only a str host; socket.getaddrinfo takes bytes, as documented)
            sock = socket.create_connection((host.encode(), port), timeout=timeout)  # type: ignore[arg-type]
        except OSError:
            socks.append(None)
            continue
        try:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            socks.append(sock)
        except OSError:
            sock.close()
            socks.append(None)
    return socks


def http_statuses_end(socks: list[socket.socket | None]) -> list[int | None]:
    return [_status_line(sock) for sock in socks]


def _status_line(sock: socket.socket | None) -> int | None:
    if sock is None:
        return None
    first = b""
    try:
        with sock:
            while b"\r\n" not in first and len(first) < 4096:
                data = sock.recv(4096)
                if not data:
                    break
                first += data
    except OSError:
        return None
    parts = first.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1].isdigit():
        return int(parts[1])
    return None
