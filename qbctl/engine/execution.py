"""Commands run inside a container (stdin and stdout streamed through one hijacked connection), and files
copied into and out of a container as tar streams.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

STDERR_KEPT = 64 * 1024  # the tail of a command's stderr kept for its error message

if TYPE_CHECKING:
    from qbctl.engine.facade import Engine


@dataclass(frozen=True)
class ExecResult:
    """A command run inside a container: its exit code, what it wrote (stdout unless sent to a sink)."""

    exit_code: int
    stdout: bytes
    stderr: str


def exec_text(eng: Engine, container_id: str, cmd: list[str], timeout: float = 10) -> str | None:
    """stdout of a command run inside the container, or None when it cannot run."""
    try:
        ex = eng.api.exec_create(container_id, cmd, stdout=True, stderr=False)
        out = eng.api.exec_start(ex["Id"])
        return out.decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - best effort: evidence only
        return None


def exec_run(
    eng: Engine,
    container_id: str,
    cmd: list[str],
    *,
    source: Iterable[bytes] | None = None,
    sink: Callable[[bytes], None] | None = None,
    env: dict[str, str] | None = None,
    user: str = "",
) -> ExecResult:
    """Run cmd in the container; stream `source` to its stdin and its stdout to `sink` as they come.

    Both streams go through one hijacked connection (the engine's attach protocol), so a dump
    of any size passes without a copy inside the container. A reader that stops early (the
    command exited) ends the feeding; an error raised by `sink` (a full disk) ends the command.
    """
    from docker.utils.socket import frames_iter

    api = eng.api
    ex = api.exec_create(
        container_id, cmd, stdin=source is not None, stdout=True, stderr=True, environment=env, user=user
    )
    sock = api.exec_start(ex["Id"], socket=True)
    raw = getattr(sock, "_sock", sock)
    raw.settimeout(None)  # a restore may say nothing for minutes; the API timeout is for API calls
    feeder = None
    failed: list[BaseException] = []
    if source is not None:

        def feed() -> None:
            try:
                for chunk in source:
                    raw.sendall(chunk)
                raw.shutdown(socket.SHUT_WR)  # end of stdin
            except OSError:
                pass  # the command stopped reading (exited, or was stopped below)
            except BaseException as exc:  # noqa: BLE001 - reading the source failed: reported below
                failed.append(exc)
                _shutdown(raw)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
    out, err = bytearray(), bytearray()
    try:
        for stream, data in frames_iter(sock, tty=False):
            if stream == 1:
                if sink is not None:
                    sink(data)
                else:
                    out += data
            else:
                err = (err + data)[-STDERR_KEPT:]
    finally:
        _shutdown(raw)  # wakes a feeder blocked on a command that stopped reading
        if feeder is not None:
            feeder.join()
        sock.close()
    if failed:
        raise failed[0]
    return ExecResult(_exit_code(eng, ex["Id"]), bytes(out), err.decode("utf-8", "replace"))


def exec_detached(eng: Engine, container_id: str, cmd: list[str]) -> None:
    """Start a command in the container and leave it running (a cleanup that need not be waited for)."""
    ex = eng.api.exec_create(container_id, cmd, stdout=False, stderr=False)
    eng.api.exec_start(ex["Id"], detach=True)


def _exit_code(eng: Engine, exec_id: str) -> int:
    for _ in range(100):  # the output ends a moment before the engine records the exit
        info = eng.api.exec_inspect(exec_id)
        if not info.get("Running"):
            return int(info.get("ExitCode") or 0)
        time.sleep(0.02)
    return int(eng.api.exec_inspect(exec_id).get("ExitCode") or 0)


def put_file(
    eng: Engine,
    container_id: str,
    folder: str,
    name: str,
    chunks: Iterable[bytes],
    size: int,
    uid: int = 0,
    gid: int = 0,
    mode: int = 0o644,
) -> None:
    """Write one file into a container (running or stopped, volumes included) from a stream."""
    eng.api.put_archive(container_id, folder, _tar_stream(name, chunks, size, uid, gid, mode))


def put_archive(eng: Engine, container_id: str, folder: str, chunks: Iterable[bytes]) -> None:
    """Unpack a tar stream into a container's folder (running or stopped, volumes included)."""
    eng.api.put_archive(container_id, folder, chunks)


def get_file(eng: Engine, container_id: str, path: str) -> Iterable[bytes] | None:
    """One file of a container (running or stopped, volumes included) as a stream; None if absent."""
    import tarfile

    from docker.errors import NotFound

    try:
        stream, _ = eng.api.get_archive(container_id, path, chunk_size=1 << 20)
    except NotFound:
        return None
    reader = _IterReader(stream)
    # (typeshed asks any fileobj for write, tell, seek and close; stream mode "r|" only reads)
    archive = tarfile.open(fileobj=reader, mode="r|")  # type: ignore[call-overload]
    member = next(iter(archive), None)
    if member is None or not member.isfile():
        return None
    fileobj = archive.extractfile(member)
    return iter(lambda: fileobj.read(1 << 20), b"")


def _shutdown(raw) -> None:
    try:
        raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _tar_stream(name: str, chunks: Iterable[bytes], size: int, uid: int, gid: int, mode: int):
    """A one-file tar archive as a stream: header, the file's bytes as they come, padding, the end."""
    import tarfile

    info = tarfile.TarInfo(name)
    info.size, info.uid, info.gid, info.mode, info.mtime = size, uid, gid, mode, int(time.time())
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    sent = 0
    for chunk in chunks:
        sent += len(chunk)
        if sent > size:
            raise OSError(f"{name} grew while it was being copied")
        yield chunk
    if sent != size:
        raise OSError(f"{name}: {sent} bytes read, {size} expected")
    yield b"\0" * (-size % 512) + b"\0" * 1024


class _IterReader:
    """A file-like reader over an iterator of byte chunks (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = b""
        self._at = 0

    def read(self, n: int = -1) -> bytes:
        parts, want = [], n
        while want != 0:
            if self._at >= len(self._buf):
                self._buf, self._at = next(self._chunks, b""), 0
                if not self._buf:
                    break
            end = len(self._buf) if want < 0 else min(len(self._buf), self._at + want)
            parts.append(self._buf[self._at : end])
            if want > 0:
                want -= end - self._at
            self._at = end
        return b"".join(parts)
