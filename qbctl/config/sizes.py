"""Memory sizes as people write them in .env files and server configs.

`150mb` (Redis), `128MB` (PostgreSQL), `1GB`, `4MB`, `512kB`, `1048576` (bytes), `150MiB`, `1GiB`.
Units are binary (1MB = 1024 kB), as both PostgreSQL and Redis read them: MiB and MB are the same.
"""

from __future__ import annotations

import re

MB = 1024 * 1024
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": MB,
    "mb": MB,
    "mib": MB,
    "g": 1024 * MB,
    "gb": 1024 * MB,
    "gib": 1024 * MB,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Return the size in bytes; ValueError with a readable reason otherwise."""
    m = _SIZE.match(text or "")
    if not m:
        raise ValueError("expected a size such as 128MB, 150mb or 1GB")
    number, unit = m.groups()
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"unknown unit {unit!r}: use kB, MB or GB (KiB, MiB, GiB are the same)")
    value = int(float(number) * factor)
    if value <= 0:
        raise ValueError("must be larger than zero")
    return value


def fmt_mb(n_bytes: float | None) -> str:
    if n_bytes is None:
        return "-"
    value = n_bytes / MB
    return f"{value:.0f}MB" if value >= 10 or value == int(value) else f"{value:.1f}MB"


def pg_size(n_bytes: int) -> str:
    """PostgreSQL's spelling of a size (kB granularity), e.g. 128MB or 4MB."""
    kb = n_bytes // 1024
    if kb % 1024 == 0:
        return f"{kb // 1024}MB"
    return f"{kb}kB"


def redis_size(n_bytes: int) -> str:
    """Redis's spelling: bytes as a plain number are unambiguous."""
    if n_bytes % MB == 0:
        return f"{n_bytes // MB}mb"
    return str(n_bytes)
