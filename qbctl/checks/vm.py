"""The budget against the engine's own host (the VM): its memory as measured, not assumed.

Used by `qbctl budget` (and `--load`) when the engine is remote or the production profile is in
force: the engine's info gives MemTotal, /proc/meminfo read inside a running container gives
MemAvailable (a container sees its host's), and the stats API what qbctl's containers use. Then:
- total: the VM's MemTotal against the shares (postgres, redis, backend, os) it must hold;
- os: MemTotal - MemAvailable - qbctl's containers = what the OS, the backend and anything else
  on the VM use now, against the os and backend shares;
- headroom: what MemTotal leaves after those shares.
Pure: the figures come in as data.
"""

from __future__ import annotations

from qbctl.config.settings import Settings
from qbctl.config.sizes import MB


def _mb(n: float) -> float:
    return round(n / MB, 1)


def apply(result, s: Settings, host: str, memory: dict, containers: dict[str, int | None]) -> None:
    """Fill the total, os and headroom items of a budget from the host's measured memory."""
    total = memory.get("total")
    by_name = {i.name: i for i in result.items}
    if not total:
        result.not_measured.append(f"{host}: the engine gave no MemTotal")
        return
    v = s.values
    shares = {
        "postgres": v.qbctl_budget_postgres,
        "redis": v.qbctl_budget_redis,
        "backend": v.qbctl_budget_backend,
        "os": v.qbctl_budget_os,
    }
    needed = sum(shares.values())
    item = by_name["total"]
    item.measured_mb = _mb(total)
    item.derivation += f"; {host} has {_mb(total):g}MB (MemTotal, from the engine)"
    if needed > total:
        item.ok = False
        item.fix = (
            f"{host} has {_mb(total):g}MB, and the postgres, redis, backend and os shares need "
            f"{_mb(needed):g}MB: lower a share (QBCTL_BUDGET_*) or give the VM more memory"
        )
    head = by_name["headroom"]
    head.measured_mb = _mb(max(total - needed, 0))
    head.derivation += f"; {host}'s MemTotal leaves {_mb(total - needed):g}MB after the other shares"
    available = memory.get("available")
    if available is None:
        result.not_measured.append(f"{host}: MemAvailable (no running container to read /proc/meminfo in)")
        return
    ours = sum(v for v in containers.values() if v)
    others = max(total - available - ours, 0)
    os_item = by_name["os"]
    os_item.measured_mb = _mb(others)
    allowed = shares["os"] + shares["backend"]
    os_item.derivation += (
        f"; measured on {host}: MemTotal {_mb(total):g} - MemAvailable {_mb(available):g} - "
        f"qbctl's containers {_mb(ours):g} = {_mb(others):g}MB used by the OS, the backend and "
        f"anything else, against the os and backend shares ({_mb(allowed):g}MB)"
    )
    if others > allowed:
        os_item.ok = False
        os_item.fix = (
            f"{host}'s OS and other processes use {_mb(others):g}MB, more than QBCTL_BUDGET_OS + "
            f"QBCTL_BUDGET_BACKEND ({_mb(allowed):g}MB): find what runs there (`ps aux --sort=-rss`), "
            "or raise QBCTL_BUDGET_OS and take it from another share"
        )
