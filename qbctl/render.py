"""Human rendering of result objects (rich tables). JSON needs none: results carry to_dict()."""
from __future__ import annotations

from qbctl.output import Output
from qbctl.sizes import fmt_mb


def _table(*columns: str):
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for c in columns:
        t.add_column(c)
    return t


def progress(out: Output, spinner):
    """An events callback: a spinner line on a terminal, plain lines on stderr otherwise."""
    def events(kind: str, service: str, payload) -> None:
        if kind == "pull-progress":
            status = payload.get("status", "") if isinstance(payload, dict) else ""
            spinner.update(f"{service}: {status} {payload.get('progress', '') if isinstance(payload, dict) else ''}")
            return
        text = f"{service}: {payload}" if service else str(payload)
        spinner.update(text)
        if kind in ("pull", "wait", "failed", "ready", "step"):
            out.note(text)
    return events


def up(out: Output, result) -> None:
    t = _table("service", "action", "image", "port", "ready")
    for s in result.services:
        ready = f"{s.seconds:.2f}s" if s.ready and s.seconds else ("yes" if s.ready else "NO")
        t.add_row(s.name, s.action, s.image, ", ".join(s.ports), ready)
    out.print(t)
    for e in result.external:
        out.line(f"{e['service']}: not started here ({e['reason']})")
    for s in result.services:
        if not s.ready and s.logs:
            out.line(f"--- last {len(s.logs)} log lines of {s.name} ---")
            for line in s.logs:
                out.line(line)
    if result.ok:
        out.line(f"stack {result.project} ready in {result.timings['ready']:.2f}s")


def down(out: Output, result) -> None:
    if not result.removed and not result.volumes_removed:
        out.line(f"project {result.project}: nothing to remove")
        return
    if result.removed:
        out.line(f"removed {len(result.removed)} containers: " + ", ".join(result.removed))
    if result.volumes_removed:
        out.line(f"removed {len(result.volumes_removed)} volumes: " + ", ".join(result.volumes_removed))


def status(out: Output, result) -> None:
    t = _table("service", "state", "health", "ports", "image", "memory")
    for s in result.services:
        state = s.state + (" (OOM killed)" if s.oom_killed else "") + (
            f" (exit {s.exit_code})" if s.exit_code not in (None, 0) else "")
        if s.restart_count:
            state += f" (restarted {s.restart_count}x)"
        mem = f"{fmt_mb(s.memory_bytes)} / {fmt_mb(s.memory_limit_bytes)}" if s.memory_bytes is not None else \
            f"- / {fmt_mb(s.memory_limit_bytes)}"
        t.add_row(s.name, state, s.health or "-", ", ".join(s.ports), s.image, mem)
    out.print(t)
    for e in result.external:
        out.line(f"{e['service']}: external ({e['reason']})")
