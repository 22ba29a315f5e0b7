"""Each result for people: tables and lines through Output. JSON needs none (results carry to_dict()).

Tables go through `Output.table`, which masks secrets, never cuts a value, and writes plain text
off a terminal; progress is drawn by `Output.progress` from the events logic sends.
"""

from __future__ import annotations

from qbctl.config.sizes import fmt_mb
from qbctl.output import Output


def stream(out: Output, chunks, flush_each: bool = False) -> None:
    """Bytes copied to stdout as they come (a container's log)."""
    raw = out.stdout.buffer if hasattr(out.stdout, "buffer") else None
    for chunk in chunks:
        if raw is not None:
            raw.write(chunk)
        else:
            out.stdout.write(chunk.decode("utf-8", "replace"))
        if flush_each:
            (raw or out.stdout).flush()
    (raw or out.stdout).flush()


def up(out: Output, result) -> None:
    out.table(
        ("service", "action", "image", "port", "ready"),
        [
            (
                s.name,
                s.action,
                s.image,
                ", ".join(s.ports),
                f"{s.seconds:.2f}s" if s.ready and s.seconds else ("yes" if s.ready else "NO"),
            )
            for s in result.services
        ],
    )
    for e in result.external:
        out.para(f"{e['service']}: not started here ({e['reason']})")
    _engine_line(out, result.engine)
    for s in result.services:
        if not s.ready and s.logs:
            out.line(f"--- last {len(s.logs)} log lines of {s.name} ---")
            for line in s.logs:
                out.line(line)
    if result.ok:
        out.line(f"stack {result.project} ready in {result.timings['ready']:.2f}s")
    where = {
        "DATABASE_URL": "DATABASE_URL",
        "REDIS_URL": "REDIS_URL",
        "adminer": "Adminer",
        "redis-commander": "Redis Commander",
    }
    for key, url in result.urls.items():
        out.line(f"  {where.get(key, key):<16} {url}")
        if key == "adminer":
            out.line(f"  {'':<16} (its login is filled in: type the password of DATABASE_URL)")
    if result.next:
        out.para("next: " + ", ".join(f"`{c}`" for c in result.next))


def _engine_line(out: Output, engine: dict) -> None:
    """Where a remote stack runs, and how its ports are reached (nothing for a local engine)."""
    if engine.get("remote"):
        out.line(
            f"engine: {engine['where']}, {engine['product']}, round trip {engine['rtt_ms']:g} ms; the ports "
            f"above are on {engine['host']} (qbctl reaches them through its ssh connection while it runs)"
        )


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" + ("" if n == 1 else "s")


def down(out: Output, result) -> None:
    if not result.removed and not result.volumes_removed:
        out.line(f"project {result.project}: nothing to remove")
        return
    if result.removed:
        out.line(f"removed {_count(len(result.removed), 'container')}: " + ", ".join(result.removed))
    if result.volumes_removed:
        out.line(f"removed {_count(len(result.volumes_removed), 'volume')}: " + ", ".join(result.volumes_removed))


def _snapshot_taken(out: Output, result) -> None:
    if result.snapshot:
        out.line(f"snapshot {result.snapshot} holds the data removed; `qbctl restore {result.snapshot}` brings it back")
    elif result.snapshot_skipped:
        out.line(f"no snapshot taken: {result.snapshot_skipped}")


def reset(out: Output, result) -> None:
    _snapshot_taken(out, result)
    down(out, result)


def db_reset(out: Output, result) -> None:
    _snapshot_taken(out, result)
    migrate(out, result)


def status(out: Output, result) -> None:
    rows = []
    for s in result.services:
        state = (
            s.state
            + (" (OOM killed)" if s.oom_killed else "")
            + (f" (exit {s.exit_code})" if s.exit_code not in (None, 0) else "")
        )
        if s.restart_count:
            state += f" (restarted {s.restart_count}x)"
        mem = (
            f"{fmt_mb(s.memory_bytes)} / {fmt_mb(s.memory_limit_bytes)}"
            if s.memory_bytes is not None
            else f"- / {fmt_mb(s.memory_limit_bytes)}"
        )
        rows.append((s.name, state, s.health or "-", ", ".join(s.ports), s.image, mem))
    out.table(("service", "state", "health", "ports", "image", "memory"), rows)
    for e in result.external:
        out.para(f"{e['service']}: external ({e['reason']})")
    _engine_line(out, result.engine)
    out.para(f"project {result.project}: {result.project_source}")
    for note in result.notes:
        out.para(f"note: {note}")


def migrate(out: Output, result) -> None:
    for a in result.applied:
        how = f"; statement by statement, {a['statements']} statements" if "statements" in a else ""
        out.line(f"{a['action']:<9} {a['file']}  ({a['ms']} ms{how})")
    for f in result.would_apply:
        why = result.one_by_one.get(f)
        out.line(f"would apply {f}" + (f"  (statement by statement: {why})" if why else ""))
    for s in result.skipped:
        out.line(f"skipped   {s['file']}  ({s['reason']})")
    if result.error is not None:
        return  # the error follows, with what was committed
    done = (
        "dry run: nothing changed"
        if result.dry_run
        else (f"{len(result.applied)} applied" if result.applied else "nothing to apply")
    )
    tsdb = f"TimescaleDB {result.timescaledb}" if result.timescaledb else "no TimescaleDB"
    out.para(f"{result.database}: {done}; {result.up_to_date} up to date; {tsdb} ({result.seconds:.2f}s)")


def rehearse(out: Output, result) -> None:
    for f in result.files:
        how = f"; statement by statement: {f['one_by_one']}" if f.get("one_by_one") else ""
        out.line(f"{'passed' if f['ok'] else 'FAILED'}  {f['file']}  ({f['ms']} ms{how})")
        for st in f["statements"]:
            if not st["ok"]:
                out.para(st["error"], indent="  ")
                continue
            effects = _effects(st)
            out.para(
                f"line {st['line']:<4} {st['ms']:>8.1f} ms  {st['text']}" + (f"  [{effects}]" if effects else ""),
                indent="  ",
            )
        strong = [lk for lk in f["locks"] if lk["mode"] not in ("AccessShareLock", "RowShareLock", "RowExclusiveLock")]
        for lk in strong:
            out.para(f"lock: {lk['says']} (line {lk['line']})", indent="  ")
        weak = [lk["table"] for lk in f["locks"] if lk not in strong]
        if weak:
            out.para(f"weaker locks, nothing the backend does waits: {', '.join(weak)}", indent="  ")
    for name in result.not_run:
        out.line(f"not run {name}  (after the failed file)")
    for s in result.skipped:
        out.line(f"skipped {s['file']}  ({s['reason']})")
    if not result.files and result.error is None:
        out.para(f"{result.database}: nothing to rehearse, every file is applied; {result.up_to_date} up to date")
        return
    c = result.copy
    if c:
        across = (
            ""
            if c.get("tunnel_bytes") is None
            else f"; {fmt_mb(c['tunnel_bytes'])} came through the tunnel from {c['source_host']}, "
            "where nothing was built"
        )
        out.para(
            f"copy of {fmt_mb(c['source_bytes'])}: {c['method']}, in {c['where']}, made in {c['seconds']:.1f}s"
            f"{across}; applied in {result.apply_seconds:.1f}s; the copy was "
            f"{'removed' if result.dropped else 'NOT removed'}"
        )
    if result.error is None:
        out.para(
            f"{result.database}: {len(result.files)} file(s) passed on the copy; nothing was applied to the "
            f"database (`qbctl db migrate` applies them) ({result.seconds:.2f}s)"
        )


def _effects(st: dict) -> str:
    parts = []
    for table, r in st.get("rows", {}).items():
        parts += [f"{table}: {n:,} rows {k}" for k, n in r.items() if n]
    parts += [f"{table}: {n} rewritten" for table, n in st.get("rewritten", {}).items()]
    parts += [f"{table}: {n} chunk(s) decompressed" for table, n in st.get("decompressed", {}).items()]
    parts += [f"{table}: {n} chunk(s) partly decompressed" for table, n in st.get("partly_decompressed", {}).items()]
    parts += [
        f"{table}: {n:,} compressed batches decompressed" for table, n in st.get("batches_decompressed", {}).items()
    ]
    parts += [f"{table}: {n} chunk(s) compressed" for table, n in st.get("compressed", {}).items()]
    parts += [
        f"{mode} on {table}"
        for table, mode in st.get("locks", {}).items()
        if mode not in ("AccessShareLock", "RowShareLock", "RowExclusiveLock")
    ]
    if st.get("note"):
        parts.append(st["note"])
    return "; ".join(parts)


def lint(out: Output, result) -> None:
    for f in result.findings:
        out.para(f"{f['file']}:{f['line']}: {f['severity']} {f['rule']}: {f['message']}")
        out.para(f"safe: {f['safe']}", indent="  ")
    if not result.files:
        out.para("nothing to lint: every file is applied")
        return
    counts = (
        f"{result.errors} error{'s' * (result.errors != 1)}, {result.warnings} warning{'s' * (result.warnings != 1)}"
    )
    out.para(
        f"{counts} in {len(result.files)} file{'s' * (len(result.files) != 1)}; tables from "
        f"{result.catalog}; squawk {result.squawk}"
    )


def db_new(out: Output, result) -> None:
    out.line(result.path)  # alone on stdout: $EDITOR "$(qbctl db new add_audit)"
    if not result.checked_against.startswith("the files the database"):
        out.note(f"note: its order was checked against {result.checked_against}")


def seed(out: Output, result) -> None:
    replaced = {t: n for t, n in (result.replaced or {}).items() if n}
    if replaced:
        out.para(
            "replaced the earlier seed of these symbols: " + ", ".join(f"{t} {n:,} rows" for t, n in replaced.items())
        )
    for sym, n in (result.kept or {}).items():
        out.line(f"kept {n:,} 1-minute rows of {sym} that db seed did not write (--yes)")
    for table, n in result.rows.items():
        out.line(f"{table:<22} {n:>10,} rows")
    if result.redis_keys:
        out.line(f"{'redis keys':<22} {result.redis_keys:>10,}")
    if not result.rows.get("market_data"):
        out.para(
            f"no KRX session minute in the last {result.days} day(s) (sessions are 09:00-15:30 KST on "
            "weekdays): nothing to seed; pass a larger --days"
        )
    for view, how in (result.refreshed or {}).items():
        out.para(f"{view}: refreshed {how}")
    for table, c in (result.compression or {}).items():
        out.line(f"{table}: {c['compressed']} of {c['chunks']} chunks compressed")
    plural = "" if result.symbols == 1 else "s"
    out.line(
        f"seeded {result.symbols} symbol{plural} x {result.days} day{'' if result.days == 1 else 's'} in "
        f"{result.seconds:.2f}s (market_data {result.market_data_rows_per_second:,.0f} rows/s)"
    )
    for note in result.notes:
        out.para(f"note: {note}")


def db_status(out: Output, result) -> None:
    out.table(("migration", "state", "why"), [(m["file"], m["state"], m["reason"]) for m in result.migrations])
    if result.hypertables:
        out.table(
            ("hypertable", "chunks", "compressed", "size", "ratio"),
            [
                (
                    h["name"],
                    str(h["chunks"]),
                    str(h["compressed_chunks"]),
                    fmt_mb(h["size_bytes"]),
                    f"{h['compression_ratio']}x" if h["compression_ratio"] else "-",
                )
                for h in result.hypertables
            ],
        )
    if result.jobs:
        out.table(
            ("job", "kind", "table", "interval", "last run", "status", "runs", "failures", "why"),
            [
                (
                    str(j["job_id"]),
                    j["kind"],
                    j["table"] or "-",
                    j["interval"] or "-",
                    (j["last_run"] or "never")[:19],
                    j["last_run_status"] or "-",
                    str(j["total_runs"]),
                    str(j["total_failures"]),
                    j["why"],
                )
                for j in result.jobs
            ],
        )
    out.para(f"{result.database}: " + (f"TimescaleDB {result.timescaledb}" if result.timescaledb else "no TimescaleDB"))
    if result.timescaledb and result.timescaledb_available and result.timescaledb != result.timescaledb_available:
        out.para(
            f"the image offers TimescaleDB {result.timescaledb_available}: `qbctl upgrade` updates "
            f"{result.timescaledb} to it"
        )


def verify(out: Output, result) -> None:
    if not result.drift:
        out.para(f"{result.database}: {result.checked} declared items match (TimescaleDB {result.timescaledb})")
        return
    out.table(
        ("item", "problem", "declared", "actual"),
        [(d["item"], d["problem"], d["declared"] or "-", d["actual"] or "-") for d in result.drift],
    )


def health(out: Output, result) -> None:
    out.table(
        ("check", "ok", "detail"),
        [(c.name, ("WARN" if c.warn else "ok") if c.ok else "FAIL", c.detail) for c in result.checks],
    )
    warnings = sum(c.warn for c in result.checks)
    if result.ok:
        out.line(
            f"project {result.project}: healthy ({result.seconds:.2f}s)"
            + (f", {warnings} warning(s)" if warnings else "")
        )


def _bar(used: float | None, limit: float | None, share: float, width: int = 24) -> str:
    """A bar of `share`: '#' measured, '=' configured beyond it, '!' past the share."""
    if not share:
        return ""
    cells = []
    for i in range(width):
        at = (i + 0.5) * share / width
        if used is not None and at <= used:
            cells.append("#")
        elif limit is not None and at <= limit:
            cells.append("=")
        else:
            cells.append(".")
    over = max(used or 0, limit or 0) > share
    return "".join(cells) + ("!" if over else "")


def budget(out: Output, result) -> None:
    prod = [i for i in result.items if i.production]
    dev = [i for i in result.items if not i.production]
    measured = "peak" if result.load else "now"
    out.table(
        ("item", "share", "predicted", measured, "", "ok"),
        [
            (
                i.name,
                f"{i.budget_mb:g}MB",
                f"{i.configured_mb:g}MB" if i.configured_mb is not None else "-",
                f"{i.measured_mb:g}MB" if i.measured_mb is not None else "-",
                _bar(i.measured_mb, i.configured_mb, i.budget_mb),
                "ok" if i.ok else "OVER",
            )
            for i in prod
        ],
    )
    differ = [(i.name, d) for i in prod for d in i.differences]
    for name, d in differ:  # what runs is not what the settings say: the prediction is for the settings
        out.para(f"{name}: {d.text}")
    for i in prod:
        if not i.terms:
            out.para(f"{i.name}: {i.derivation}", indent="  ")
            continue
        now = f" (as it runs now: {i.running_mb:g}MB)" if i.differences and i.running_mb is not None else ""
        out.para(f"{i.name}: {i.configured_mb:g}MB predicted{now}; {i.basis}", indent="  ")
        for n, t in enumerate(i.terms):  # every term, the zero ones too: they say why they are zero
            out.para(f"{'+ ' if n else '  '}{t['name']} {t['mb']:g}MB: {t['text']}", indent="    ")
    if result.load:
        _load(out, result)
    out.table(
        ("redis keys", "share", "measured", "", "ok"),
        [
            (
                f.name,
                f"{f.budget_mb:g}MB" if f.budget_mb else "(market)",
                f"{f.measured_mb:g}MB" if f.measured_mb is not None else "-",
                _bar(f.measured_mb, None, f.budget_mb),
                "ok" if f.ok else "OVER",
            )
            for f in result.redis_families
        ],
    )
    out.para(
        "dev tools, outside the 1 GB budget: "
        + ", ".join(
            f"{i.name} limit {i.budget_mb:g}MB" + (f" (using {i.measured_mb:g}MB)" if i.measured_mb is not None else "")
            for i in dev
        )
    )
    for n in result.not_measured:
        out.para(f"not measured: {n}")
    for n in result.notes:
        out.para(f"note: {n}")
    judged = "; predicted: for what the next `qbctl up` applies, not for what runs now" if differ else ""
    out.para(
        f"{'fits' if result.ok else 'does NOT fit'} in {result.budget_mb:g}MB "
        f"(bars: # {measured}, = predicted, ! past the share{judged})"
    )


def _ms(x) -> str:
    return "-" if x is None else f"{x:g}ms"


def _load(out: Output, result) -> None:
    load = result.load
    out.line(f"under load for {load['seconds']:g}s, {load['sessions']} PostgreSQL sessions:")
    rows = []
    for i in result.items:
        if i.kills or i.peak_with_cache_mb is not None:
            share = f"{i.measured_mb / i.budget_mb * 100:.0f}%" if i.measured_mb else "-"
            err = f"{i.error_pct:+g}%" if i.error_pct is not None else "-"
            predicted = i.running_mb if i.running_mb is not None else i.configured_mb  # of what was measured
            rows.append(
                (
                    i.name,
                    f"{predicted:g}MB",
                    f"{i.measured_mb:g}MB",
                    f"{i.peak_with_cache_mb:g}MB",
                    share,
                    err,
                    str(len(i.kills)) if i.kills else "none",
                )
            )
    out.table(("service", "predicted", "peak", "with cache", "of share", "model error", "kills"), rows)
    for i in result.items:
        for k in i.kills:
            out.para(f"{i.name} killed: {k}", indent="  ")
    out.table(
        ("query", "runs", "errors", "p50", "p99"),
        [(k, str(q.count), str(q.errors), _ms(q.p50_ms), _ms(q.p99_ms)) for k, q in load["queries"].items()],
    )
    rd = load["redis"]
    get = rd["get"]
    out.para(
        f"redis GET p50 {_ms(get.p50_ms)}, p99 {_ms(get.p99_ms)} (target 1ms) over {get.count} reads; "
        f"evicted: "
        + (", ".join(f"{k} {v}" for k, v in sorted(rd["evicted"].items())) or "none")
        + f"; background save: {rd['bgsave']}",
        indent="  ",
    )
    for note in load["notes"]:
        out.para(f"note: {note}", indent="  ")


def ci(out: Output, result) -> None:
    for s in result.steps:
        extra = ""
        if s["step"] == "lint" and result.lint:
            errors = sum(f["severity"] == "error" for f in result.lint)
            extra = f"  {errors} errors, {len(result.lint) - errors} warnings (shown above; `qbctl db lint`)"
        out.line(f"{s['step']:<8} {'ok' if s['ok'] else 'FAILED':<7} {s['seconds']:.2f}s{extra}")
    if result.exported:
        out.line("exported to GITHUB_ENV: " + ", ".join(result.exported))
    if result.ok:
        out.line(f"ci setup done in {result.seconds:.2f}s")


def env_check(out: Output, result) -> None:
    for i in result.invalid:
        out.para(f"bad value   {i['key']}={i['value']!r}: {i['problem']}")
    for u in result.unknown:
        out.line(
            f"unknown     {u['key']}"
            + (f" (did you mean {u['did_you_mean']}?)" if u["did_you_mean"] else "")
            + (f" ({u['note']})" if u.get("note") else "")
        )
    if result.env_file is None:
        out.para("no .env here: every setting has its default (`qbctl config show` lists them)")
    elif result.ok:
        out.para(
            f"{result.env_file}: ok"
            + (f"; {result.defaults} settings not in it keep their defaults" if result.defaults else "")
        )


def config(out: Output, result) -> None:
    out.table(("setting", "value", "source"), [(r["key"], r["value"], r["source"]) for r in result.settings])
    out.para(f"project {result.project}: {result.project_source}")
    out.para(f"env file {result.env_file or '(none: every default applies)'}")
    out.para(f"schema {result.schema}")


def compose(out: Output, result) -> None:
    out.para(f"{result.path}: " + ("written" if result.written else "up to date" if result.ok else "out of date"))


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:,.1f} MB" if n >= 2**20 else f"{n / 1024:,.0f} kB"


def snapshot(out: Output, result) -> None:
    if result.skipped:
        out.line(f"no snapshot taken: {result.skipped}")
        return
    pg, rd = result.postgres or {}, result.redis
    out.line(
        f"snapshot {result.name}: PostgreSQL {pg.get('version', '?').split()[0]}"
        + (f", TimescaleDB {pg['timescaledb']}" if pg.get("timescaledb") else "")
        + f", {pg.get('tables', 0)} tables, {pg.get('rows', 0):,} rows"
        + (f"; Redis {rd['keys']:,} keys" if rd else "")
        + f"; {_size(result.bytes)} in {result.seconds:.1f}s"
    )
    out.line(f"  in {result.path} ({' and '.join(result.forms)})")
    for note in result.notes:
        out.line(f"  note: {note}")
    out.line(f"  restore it with: {result.restore_command}")
    if result.pruned:
        out.line("  removed old automatic snapshots: " + ", ".join(result.pruned))


def snapshot_list(out: Output, result) -> None:
    if not result.snapshots:
        out.line(f"no snapshots in {result.folder}")
        return
    out.table(
        ("name", "created", "kind", "size", "postgres", "timescaledb", "rows", "redis keys"),
        [
            (
                s["name"],
                (s["created"] or "-").replace("T", " ")[:19],
                "damaged: " + s["problem"]
                if s["problem"]
                else (f"auto ({s['before']})" if s["automatic"] else "named"),
                _size(s["bytes"]),
                (s["postgres"] or "-").split()[0],
                s["timescaledb"] or "-",
                f"{s['rows']:,}",
                "-" if s["redis_keys"] is None else f"{s['redis_keys']:,}",
            )
            for s in result.snapshots
        ],
    )
    out.line(
        f"{_count(len(result.snapshots), 'snapshot')} in {result.folder}; automatic ones beyond the newest "
        f"{result.keep} are removed (QBCTL_SNAPSHOT_KEEP), named ones never"
    )


def snapshot_rm(out: Output, result) -> None:
    out.line(f"removed snapshot {result.name} ({_size(result.bytes)})")


def restore(out: Output, result) -> None:
    if result.safety_snapshot:
        out.line(f"the data it replaced: snapshot {result.safety_snapshot} (qbctl restore {result.safety_snapshot})")
    for note in result.notes:
        out.line(f"note: {note}")
    if result.postgres:
        pg = result.postgres
        out.line(
            f"postgres: {result.database} restored, {pg['tables']} tables, {pg['rows']:,} rows, checked "
            f"against the snapshot ({pg['seconds']:.1f}s)"
        )
    if result.redis:
        out.line(f"redis: {result.redis['keys']:,} keys restored ({result.redis['seconds']:.1f}s)")
    if result.ok:
        out.line(f"restored {result.name} in {result.seconds:.1f}s")


def upgrade(out: Output, result) -> None:
    if result.snapshot:
        out.line(f"the data before the update: snapshot {result.snapshot} (qbctl restore {result.snapshot})")
    for t in result.timescaledb:
        out.line(
            f"{t['database']}: TimescaleDB "
            + (f"{t['from']} -> {t['to']}" if t["from"] != t["to"] else f"{t['to']} (up to date)")
        )
    for d in result.databases:
        out.line(f"{d['database']}: {d['tables']} tables, {d['rows']:,} rows moved and checked")
    if result.verify:
        ok = result.verify["ok"]
        out.line("db verify: " + ("ok, " if ok else "FAILED, " if ok is False else "") + result.verify["detail"])
    if result.kind == "major" and result.ok:
        out.line(
            f"PostgreSQL {result.from_major} -> {result.to_major}: the data is in volume {result.target} "
            f"({result.seconds:.1f}s)"
        )
        out.line(
            f"the old volume {result.kept_volume} is kept, untouched; remove it when you no longer need it: "
            f"{result.remove_command}"
        )
    elif result.ok:
        out.line(result.reason)
