"""Where snapshots live and what makes one whole: `<project folder>/.qbctl/snapshots/<name>/`.

A folder in the project (ignored by git), next to the code the data belongs to, where a
developer sees it, copies it, backs it up; never inside the Docker volume it protects (a
`reset` removes volumes). Each snapshot folder holds:

- `postgres.dump`: pg_dump's custom format (restores across PostgreSQL versions, TimescaleDB-aware);
- `postgres.tar`: named snapshots only, the server's data directory (pg_basebackup), the same data
  as the dump (checked when it is taken), restored instead of the dump when the image runs the same
  major and TimescaleDB version: 1.6 times faster than the dump, 30 times larger (docs/benchmarks.md);
- `redis.rdb`: Redis's dataset (when Redis runs in the stack);
- `meta.json`, written last: time, project, versions, the inventory (rows and a checksum per
  table, hypertables, jobs, migrations) and each file's size and SHA-256.

A snapshot is written into `.tmp-<name>` and renamed into place only when complete, so a
half-written one never looks whole; a file that no longer matches its recorded checksum is
refused on restore. Automatic snapshots (`auto-<command>-<time>`, taken before a destructive
command) are pruned to the newest QBCTL_SNAPSHOT_KEEP; named ones are never pruned.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from qbctl import localstate
from qbctl.config.settings import Settings
from qbctl.errors import NoSpace, SnapshotDamaged, UsageError

FORMAT = 1
META = "meta.json"
PG_FILE = "postgres.dump"
PHYSICAL_FILE = "postgres.tar"
REDIS_FILE = "redis.rdb"
AUTO = "auto-"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
TMP = ".tmp-"
STALE_TMP = 3600  # seconds: a temp folder this old belongs to a run that died


def folder(settings: Settings) -> Path:
    return settings.root / ".qbctl" / "snapshots"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name or ""):
        raise UsageError(
            f"snapshot name {name!r}: use letters, digits, '.', '_' and '-' (at most 100, "
            "starting with a letter or digit)",
            code="SNAPSHOT_NAME",
        )
    return name


def stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")


def auto_name(command: str, now: datetime | None = None) -> str:
    return f"{AUTO}{command}-{stamp(now)}"


@dataclass
class Entry:
    name: str
    path: Path
    meta: dict | None  # None: no readable meta.json (damaged)
    problem: str | None = None

    @property
    def automatic(self) -> bool:
        return bool(self.meta and self.meta.get("automatic"))

    @property
    def created(self) -> str:
        return (self.meta or {}).get("created", "")

    @property
    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


def _read(path: Path) -> Entry:
    try:
        meta = json.loads((path / META).read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            return Entry(path.name, path, None, f"{META} is of an unknown format")
        return Entry(path.name, path, meta)
    except FileNotFoundError:
        return Entry(path.name, path, None, f"no {META} (not a snapshot, or cut short)")
    except (OSError, ValueError) as exc:
        return Entry(path.name, path, None, f"{META} cannot be read: {exc}")


def entries(settings: Settings) -> list[Entry]:
    """Every snapshot of the project, oldest first (damaged ones included, with their problem)."""
    root = folder(settings)
    if not root.is_dir():
        return []
    found = [_read(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(TMP)]
    return sorted(found, key=lambda e: (e.created or "~", e.name))


def find(settings: Settings, name: str) -> Entry:
    path = folder(settings) / check_name(name)
    if not path.is_dir():
        known = [e.name for e in entries(settings)]
        raise UsageError(
            f"no snapshot named {name} in {folder(settings)}",
            code="SNAPSHOT_NOT_FOUND",
            hint="`qbctl snapshot list` shows them" if known else "`qbctl snapshot` takes one",
        )
    return _read(path)


def verify(entry: Entry) -> dict:
    """Every file present, of its recorded size and SHA-256; SNAPSHOT_DAMAGED naming the first that is not.
    The snapshot's meta (never None once verified)."""
    if entry.meta is None:
        raise SnapshotDamaged(
            f"snapshot {entry.name} is damaged: {entry.problem}",
            hint="nothing was changed; take a new one, or copy the folder again from where you keep it",
        )
    for name, want in entry.meta.get("files", {}).items():
        path = entry.path / name
        problem = None
        if not path.is_file():
            problem = f"{name} is missing"
        elif (size := path.stat().st_size) != want["bytes"]:
            problem = f"{name} has {size:,} bytes, {want['bytes']:,} were written " + (
                "(cut short?)" if size < want["bytes"] else "(written to since?)"
            )
        elif sha256(path) != want["sha256"]:
            problem = f"{name} changed since the snapshot was taken (checksum)"
        if problem:
            raise SnapshotDamaged(
                f"snapshot {entry.name} is damaged: {problem}; nothing was changed",
                hint="take a new one, or copy the folder again from where you keep it",
                snapshot=entry.name,
            )
    return entry.meta


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def chunks(path: Path, size: int = 1 << 20):
    with open(path, "rb") as f:
        yield from iter(lambda: f.read(size), b"")


class Writer:
    """A file written chunk by chunk, hashed as it goes; a full disk is NO_SPACE."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._h = hashlib.sha256()
        self.bytes = 0

    def __call__(self, data: bytes) -> None:
        try:
            self._f.write(data)
        except OSError as exc:
            raise no_space(exc, self.path.parent) from None
        self._h.update(data)
        self.bytes += len(data)

    def close(self) -> dict:
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as exc:
            raise no_space(exc, self.path.parent) from None
        finally:
            self._f.close()
        return {"bytes": self.bytes, "sha256": self._h.hexdigest()}


def no_space(exc: OSError, where: Path) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(
            f"no space left on the disk of {where}; the snapshot was not kept",
            hint="free some space (`qbctl snapshot list`, `qbctl snapshot rm NAME`), then try again",
        )
    return exc


def free_bytes(path: Path) -> int:
    for p in (path, *path.parents):
        if p.exists():
            return shutil.disk_usage(p).free
    return 0


def check_space(path: Path, need: int, what: str) -> None:
    free = free_bytes(path)
    if free < need:
        raise NoSpace(
            f"{what} needs about {_mb(need)} on the disk of {path}; {_mb(free)} is free; nothing was changed",
            hint="free some space (`qbctl snapshot rm NAME` removes old snapshots)",
        )


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n / 1024:,.0f} kB"


def refuse_taken(settings: Settings, name: str) -> None:
    if (folder(settings) / name).exists():
        raise UsageError(
            f"a snapshot named {name} exists already",
            code="SNAPSHOT_EXISTS",
            hint=f"choose another name, or `qbctl snapshot rm {name}` first",
        )


@contextmanager
def staging(settings: Settings, name: str):
    """A temp folder for a new snapshot, renamed to its name when the block completes; removed otherwise."""
    root = folder(settings)
    final = root / name
    refuse_taken(settings, name)
    tmp = root / f"{TMP}{name}-{os.getpid()}"
    try:
        tmp.mkdir(parents=True)
        _ignore_in_git(root.parent)
    except OSError as exc:
        raise no_space(exc, root) from None
    try:
        yield tmp
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _ignore_in_git(qbctl_dir: Path) -> None:
    localstate.ignore_in_git(str(qbctl_dir))


def write_meta(path: Path, meta: dict) -> None:
    data = json.dumps(meta, indent=1, sort_keys=False) + "\n"
    try:
        with open(path / META, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise no_space(exc, path) from None


def remove(entry: Entry) -> None:
    shutil.rmtree(entry.path)


def prune(settings: Settings, keep: int, protect: tuple[str, ...] = ()) -> list[str]:
    """Remove the automatic snapshots beyond the newest `keep` (not those in `protect`), and temp
    folders of runs that died."""
    removed = []
    automatic = [e for e in entries(settings) if e.automatic and e.name not in protect]
    for e in automatic[: max(0, len(automatic) - keep)]:
        shutil.rmtree(e.path, ignore_errors=True)
        removed.append(e.name)
    root = folder(settings)
    for p in root.glob(f"{TMP}*") if root.is_dir() else ():
        try:
            if time.time() - p.stat().st_mtime > STALE_TMP:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass
    return removed
