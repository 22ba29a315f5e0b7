"""Evidence that the kernel killed something inside a container, from the container itself.

The engine's event log keeps only its last few hundred events, so an `oom` event is no reliable
record. The container's own cgroup counts the kernel's OOM kills (memory.events on cgroup v2,
memory.oom_control on v1), and PostgreSQL logs a killed backend and the crash recovery that follows.
"""

from __future__ import annotations

PG_KILL_LINES = (
    "terminated by signal 9",
    "was terminated by signal",
    "terminating any other active server processes",
    "automatic recovery in progress",
    "all server processes terminated; reinitializing",
)
OOM_COUNTER_FILES = ("memory.events", "memory.oom_control")  # cgroup v2, v1


def pg_kills(log_text: str) -> list[str]:
    """The lines of a PostgreSQL log that say a process was killed or the server crashed. Pure."""
    return [line.strip() for line in log_text.splitlines() if any(k in line for k in PG_KILL_LINES)]


def oom_kill_count(text: str | None) -> int | None:
    """The kernel's OOM kill counter from a cgroup's memory.events (v2) or memory.oom_control (v1). Pure."""
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "oom_kill" and parts[1].isdigit():
            return int(parts[1])
    return None


def oom_kills(eng, container_id: str) -> int | None:
    """How many processes the kernel killed in the container's cgroup since it started; None: unknown."""
    return oom_kill_count(eng.cgroup_memory_file(container_id, OOM_COUNTER_FILES))


def since_start(eng, service: str, container_id: str, started_at: str) -> list[str]:
    """Every kill since the container started, each with its evidence (and time, where the log has it)."""
    found = []
    n = oom_kills(eng, container_id)
    if n:
        found.append(
            f"the kernel killed {n} process(es) in the {service} container since it started "
            f"({started_at[:19].replace('T', ' ')} UTC): out of memory"
        )
    if service == "postgres":
        from datetime import datetime

        try:
            since = int(datetime.fromisoformat(started_at[:19] + "+00:00").timestamp())
        except ValueError:
            since = None
        lines = pg_kills("\n".join(eng.tail_logs(container_id, 5000, since=since)))
        found += [f"postgres log: {line[:160]}" for line in lines[:3]]
    return found
