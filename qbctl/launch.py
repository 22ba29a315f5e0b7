"""The console script's first step: a warm `qbctl up` answered before Typer and the commands load.

`qbctl up` on a stack that already runs as asked does nothing, and is run often (scripts, CI, a
Makefile's every target), so it should cost what `docker compose up -d` costs on a running stack.
Loading Typer, click and every command module takes ~40 ms of that; here, for the plain forms only
(`up [SERVICE...] [--no-ui] [--json]`, no global option), the answer kept by the last warm `up`
(stack/memo.py) is given when nothing it came from has changed; else stack/warm.py is asked with the
same AppState the CLI would build, and keeps its answer. Whatever it cannot answer (anything to do,
anything unusual, another form of the command) goes on to `cli.run` with that state, so that settings
are read, and their warnings said, once.
"""

from __future__ import annotations

import os
import sys

SERVICES = ("postgres", "redis", "adminer", "redis-commander")  # spec.SERVICES, without importing it
FLAGS = ("--no-ui", "--json")


def quick_form(argv: list[str]) -> bool:
    """Whether argv is a plain `up` this launcher may answer: anything else is Typer's to parse."""
    return bool(argv) and argv[0] == "up" and all(a in FLAGS or a in SERVICES for a in argv[1:])


def form_of(argv: list[str]) -> tuple:
    """The parts of a plain `up` that change its answer: the services named, and --no-ui."""
    return tuple(a for a in argv[1:] if a in SERVICES), "--no-ui" in argv


ON_INTERRUPT = "nothing was created or changed"


def kept_up(argv: list[str]) -> int | None:
    """The exit code of a warm `up` whose answer was kept (stack/memo.py) and still holds, or None."""
    from qbctl.stack import memo

    try:
        found = memo.answer(form_of(argv))
    except KeyboardInterrupt:
        from qbctl.errors import Interrupted
        from qbctl.output import Output

        out = Output()
        out.json = "--json" in argv
        return out.fail(Interrupted(f"interrupted: {ON_INTERRUPT}"))
    except Exception:  # noqa: BLE001 - whatever it is, the warm path looks again and says it in its words
        return None
    if found is None:
        return None
    from types import SimpleNamespace

    from qbctl.events import Event, Status
    from qbctl.output import Output

    out = Output()
    out.json = "--json" in argv
    for warning in found["warnings"]:
        out.warn(warning)
    result = found["result"]
    _show(out, [Event(Status(status), text, service) for status, text, service in found["events"]])
    if not out.json:
        services = [SimpleNamespace(**s) for s in result["services"]]
        result = SimpleNamespace(**{**result, "services": services})
    _render(out, result)
    return 0


def _show(out, said: list) -> None:
    if said:
        with out.progress("starting the stack") as events:
            for event in said:
                events(event)


def _render(out, result) -> None:
    if out.json:
        out.emit_json(result if isinstance(result, dict) else result.to_dict())
    else:
        from qbctl import views

        views.up(out, result)


def warm_up(argv: list[str], state) -> int | None:
    """The exit code of a warm `up` answered here, or None: the CLI runs it."""
    from qbctl.errors import Interrupted

    out = state.out
    out.json = "--json" in argv
    state.command = "up"
    state.on_interrupt = ON_INTERRUPT
    kept: dict = {}
    try:
        settings = state.settings
        from qbctl.stack import warm
        from qbctl.stack.up_result import UpOptions

        services, no_ui = form_of(argv)
        quick = warm.up(settings, UpOptions(services=services, no_ui=no_ui), keep=kept)
    except KeyboardInterrupt:
        return out.fail(Interrupted(state.interrupted_message()))
    except Exception:  # noqa: BLE001 - a QbctlError or a bug: the CLI runs it and says it in its words
        return None
    if quick is None:
        return None
    result, said = quick
    _keep(state, argv, kept, result, said)
    _show(out, said)
    _render(out, result)
    return result.exit_code


def _keep(state, argv: list[str], kept: dict, result, said: list) -> None:
    """Keep this answer (stack/memo.py) for the next `up` of this form, as it was shown: masked."""
    import json
    import os

    from qbctl.config.settings import SETTINGS
    from qbctl.stack import memo

    settings, out = state.settings, state.out
    # A named context's endpoint lives in a file of its own, which the kept inputs do not watch: not kept.
    if not result.ok or not kept.get("socket") or kept.get("source") not in ("the default", "DOCKER_HOST"):
        return
    root = str(settings.root)
    named = os.environ.get("QBCTL_PROJECT_DIR")
    start = os.path.abspath(os.path.expanduser(named)) if named else os.getcwd()
    try:
        env_text = settings.env_file.read_text(errors="replace") if settings.env_file else None
    except OSError:
        env_text = None
    form = form_of(argv)
    names = memo.env_names([s.key for s in SETTINGS], env_text)
    probed = set(kept["probed"])
    marked = settings.marker is not None
    kept.update(
        names=names,
        marked=marked,
        inputs=memo.inputs(root, start, form, names, marked),
        result=json.loads(out.mask(json.dumps(result.to_dict(), default=str))),
        events=[
            (str(e.status), None if e.service in probed and e.status == "done" else out.mask(e.text), e.service)
            for e in said
        ],
        warnings=[out.mask(w) for w in state.settings_warnings()],
    )
    memo.keep(root, {"format": memo.FORMAT, "answers": {**memo.answers_of(root), (start, form): kept}})


def leave(code: int) -> None:
    """Flush, and leave without tearing the interpreter down.

    Unloading psycopg, OpenSSL and the Docker SDK's session took 25-40 ms of every run (bench/)
    and does nothing a finished command needs: connections are closed, files written through
    context managers, and the only threads left are daemons (a health check that never answered).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (qbctl ... | head): nothing more to say
            pass
    os._exit(int(code))


def run() -> None:
    """The console script."""
    argv = sys.argv[1:]
    state = None
    if quick_form(argv):
        code = kept_up(argv)
        if code is not None:
            leave(code)
        from qbctl.context import AppState

        state = AppState()
        code = warm_up(argv, state)
        if code is not None:
            leave(code)
    from qbctl.cli import run as run_cli

    run_cli(state)
