"""A container's memory: its cgroup read on this host (v1 or v2), else the engine's stats API (Podman's
cache figures read inside the container); the engine host's memory. The parsers are pure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

CACHE_READ_EVERY = 5.0  # seconds between reads of a container's memory.stat where stats lack cache figures
MEMSTAT_CMD = ["sh", "-c", "cat /sys/fs/cgroup/memory.stat 2>/dev/null || cat /sys/fs/cgroup/memory/memory.stat"]
CGROUP = "/sys/fs/cgroup"

if TYPE_CHECKING:
    from qbctl.engine.facade import Engine


@dataclass(frozen=True)
class Memory:
    """A container's memory from the engine's stats API (cgroup v1 and v2, local or remote)."""

    usage: int  # what the cgroup is charged for, page cache included
    cache: int  # reclaimable page cache: file pages, active and inactive (shared memory is not among them)
    limit: int
    max_usage: int | None  # the cgroup's own peak (cgroup v1 only), page cache included
    cache_known: bool = True  # False: the engine gave no cache figure and none could be read (usage has it)

    @property
    def without_cache(self) -> int:
        """The memory the kernel cannot simply drop: anonymous and shared memory, kernel memory.
        (`docker stats` subtracts only inactive file pages; active ones are reclaimed just the same
        before anything is killed.)"""
        return max(self.usage - self.cache, 0)


def of_container(eng: Engine, container_id: str) -> Memory | None:
    """Memory figures from one stats sample; None when the engine gives none.

    A container on this host has its cgroup read directly (a few ms): the stats API waits for its
    collector's next one-second tick even with one_shot (Docker 20.10), which made `status` take 1.2 s.
    Podman's stats carry no page cache figures: then the container's own cgroup (memory.stat,
    read inside it) gives them, at most every CACHE_READ_EVERY seconds per container (each exec
    leaves a conmon process behind on Podman for minutes; between reads the last figure is used,
    which overstates the memory when the cache grows); failing that, `cache_known` is False."""
    if eng.on_this_host:
        local = cgroup_memory(container_id)
        if local is not None:
            return local
    try:
        s = eng.api.stats(container_id, stream=False, one_shot=True)
    except Exception:  # noqa: BLE001 - a container that just went away has no figures
        return None
    m = memory_from_stats(s)
    if m is not None and not m.cache_known:
        when, cache = eng.cache_reads.get(container_id, (0.0, None))
        if time.monotonic() - when >= CACHE_READ_EVERY:
            cache = cache_from_memstat(eng.exec_text(container_id, MEMSTAT_CMD))
            eng.cache_reads[container_id] = (time.monotonic(), cache)
        if cache is not None:
            m = Memory(m.usage, min(cache, m.usage), m.limit, m.max_usage, True)
    return m


def host_memory(eng: Engine, container_id: str | None = None) -> dict:
    """The engine host's memory: MemTotal from the engine's info; MemAvailable from /proc/meminfo
    read inside a running container (a container sees the host's). Bytes; missing keys unknown."""
    out: dict[str, int] = {}
    try:
        total = eng.api.info().get("MemTotal")
        if total:
            out["total"] = int(total)
    except Exception:  # noqa: BLE001 - evidence only
        pass
    if container_id:
        info: dict = {}
        for _ in range(2):  # an exec through a remote engine's connection can fail once; a second try is cheap
            info = meminfo(eng.exec_text(container_id, ["cat", "/proc/meminfo"]))
            if "MemAvailable" in info:
                break
        if "MemAvailable" in info:
            out["available"] = info["MemAvailable"]
        if "total" not in out and "MemTotal" in info:
            out["total"] = info["MemTotal"]
    return out


def cgroup_memory_file(eng: Engine, container_id: str, names: tuple[str, ...]) -> str | None:
    """The first of the container's cgroup memory files (memory.events, memory.oom_control) that can be
    read: straight from /sys/fs/cgroup when the engine runs here (cgroup v1 or v2, cgroupfs or systemd
    driver; a tenth of a millisecond), else from inside the container (an exec, ~100 ms)."""
    if eng.on_this_host:
        for name in names:
            for folder in (
                f"memory/docker/{container_id}",
                f"memory/system.slice/docker-{container_id}.scope",
                f"docker/{container_id}",
                f"system.slice/docker-{container_id}.scope",
            ):
                try:
                    with open(f"/sys/fs/cgroup/{folder}/{name}") as f:
                        return f.read()
                except OSError:
                    continue
    paths = " ".join(f"/sys/fs/cgroup/{n} /sys/fs/cgroup/memory/{n}" for n in names)
    return eng.exec_text(container_id, ["sh", "-c", f"for f in {paths}; do [ -r $f ] && exec cat $f; done"])


def cgroup_memory(container_id: str, root: str = CGROUP) -> Memory | None:
    """A container's memory read from its cgroup on this host (cgroup v2 or v1, the systemd or the
    cgroupfs driver); None when the container's cgroup is not here (a remote engine, another layout)."""
    from pathlib import Path

    base = Path(root)
    for v2 in (base / "system.slice" / f"docker-{container_id}.scope", base / "docker" / container_id):
        if (v2 / "memory.current").is_file():
            stat = _stat_file(v2 / "memory.stat")
            limit = _read_int(v2 / "memory.max")
            cache = stat.get("inactive_file", 0) + stat.get("active_file", 0)
            return Memory(
                _read_int(v2 / "memory.current") or 0, cache, limit if limit is not None else _host_memory(), None
            )
    for v1 in (
        base / "memory" / "docker" / container_id,
        base / "memory" / "system.slice" / f"docker-{container_id}.scope",
    ):
        if (v1 / "memory.usage_in_bytes").is_file():
            stat = _stat_file(v1 / "memory.stat")
            limit = _read_int(v1 / "memory.limit_in_bytes") or 0
            host = _host_memory()
            return Memory(
                _read_int(v1 / "memory.usage_in_bytes") or 0,
                sum(stat.get(f"total_{k}", stat.get(k, 0)) for k in ("inactive_file", "active_file")),
                min(limit, host) if host else limit,
                _read_int(v1 / "memory.max_usage_in_bytes"),
            )
    return None


def _read_int(path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _stat_file(path) -> dict[str, int]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v) for k, _, v in (line.partition(" ") for line in lines) if v.isdigit()}


def _host_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory_from_stats(s: dict) -> Memory | None:
    """The memory part of one stats sample. Pure: cgroup v1 (total_inactive_file, max_usage) and
    v2 (inactive_file) alike; an engine that gives no cache figures (Podman) gives cache_known=False."""
    mem = s.get("memory_stats") or {}
    usage = mem.get("usage")
    if usage is None:
        return None
    stats = mem.get("stats") or {}
    cache = sum(stats.get(f"total_{k}", stats.get(k, 0)) for k in ("inactive_file", "active_file"))
    return Memory(usage, cache, mem.get("limit", 0), mem.get("max_usage"), bool(stats))


def cache_from_memstat(text: str | None) -> int | None:
    """Reclaimable page cache (active and inactive file pages) from a cgroup's memory.stat, v1 or v2. Pure."""
    values = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            values[parts[0]] = int(parts[1])
    keys = ("active_file", "inactive_file")
    if not all(k in values or f"total_{k}" in values for k in keys):
        return None
    return sum(values.get(f"total_{k}", values.get(k, 0)) for k in keys)


def meminfo(text: str | None) -> dict[str, int]:
    """/proc/meminfo as bytes by key. Pure."""
    out = {}
    for line in (text or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    return out
