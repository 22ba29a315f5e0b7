"""A warm `up`'s answer, kept: asked again on the same inputs, it is given again without being worked out again.

A warm `up` (stack/warm.py) reads the settings, builds the specs and plans them against what the engine
reports; when nothing is to be done it says so. That answer is a function of two things, and this module
keeps both beside it in `<project>/.qbctl/up.memo`:

- **what qbctl read**: its own code (each module's size and modification time), the folders the project
  search looked at, the env file, the environment variables the settings and the engine target come from
  (digested: no value is stored), Docker's config.json, and the form of the command (services, --no-ui);
- **what the engine said**: the project's containers (ID, state, health, config label, image), the images'
  IDs, PostgreSQL's data volumes, and the UIs' restart counts.

The next `up` in that plain form (qbctl/launch.py asks before anything else loads) compares: when what it
reads is unchanged and the engine says the very same thing (and the UIs answer HTTP 200, as warm.py asks),
the planner would be given the same inputs, so its answer is the kept one, shown through the same views with
this run's times. Anything different, missing, or unreadable, and the ordinary warm path runs and decides
(and keeps its new answer). Only a local Docker engine's answers are kept. The kept result holds what `up`
prints, masked as printed, so no password is ever written here.

Light on purpose: standard modules only and the raw engine client, no dataclasses, no settings, no specs.
"""

from __future__ import annotations

import marshal
import os
import sys
import time

from qbctl import localstate

FORMAT = 1
FILE = "up.memo"  # in the project's .qbctl folder, beside its snapshots
MARKERS = ("sql/schema", ".env", "pyproject.toml", ".git")  # what the project search (settings.find_project) looks at
# the engine's address, the project folder, and where the project lock's file is (engine.lock.local_path)
ENGINE_VARS: tuple[str, ...] = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "HOME", "QBCTL_PROJECT_DIR")
ENGINE_VARS += ("XDG_RUNTIME_DIR", "TMPDIR", "TEMP", "TMP")
HEALTH = ("healthy", "unhealthy", "health: starting")  # as the engine writes it in a container's Status


def health_of(status: str) -> str | None:
    """A container's health from the list call's Status ("Up 3 minutes (healthy)"): healthy, unhealthy,
    starting, or None (no health check)."""
    return next((h.replace("health: ", "") for h in HEALTH if f"({h})" in status), None)


def ready_text(seconds: float) -> str:
    """What a service's event says once it answered (up.py, warm.py and the kept answer say it alike)."""
    return f"ready in {seconds:.2f}s"


# --- what qbctl read ------------------------------------------------------------------------------------


def _stat(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns)


def _code() -> tuple:
    """qbctl's own modules: an upgrade or an edit of any of them is another qbctl."""
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    seen: list = [sys.version, top]
    for folder, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(folder, name))
                seen.append((folder[len(top) :], name, st.st_size, st.st_mtime_ns))
    return tuple(seen)


def _digest(values: list) -> bytes:
    try:  # the built-in module: hashlib would load OpenSSL first (~5 ms)
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:  # Python 3.12 and later name it _sha2
        try:
            from _sha2 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            from hashlib import sha256  # type: ignore[no-redef,unused-ignore]

    return sha256(marshal.dumps(values)).digest()


def inputs(root: str, start: str, form: tuple, names: tuple, marked: bool, environ=os.environ) -> tuple:
    """Everything the settings, the specs and the engine's address were made from (see the docstring).

    `start`: where the project search starts (the working folder, or QBCTL_PROJECT_DIR); each folder it looked
    at is looked at again: up to `root` when it found a marker there (`marked`), else up to where it stopped (a
    repository's root, the home folder, the file system's root). `names`: the environment variables read."""
    folders, folder = [], start
    home = os.path.expanduser("~")
    while True:
        seen = tuple(_stat(os.path.join(folder, m)) for m in MARKERS)
        folders.append((folder, seen))
        parent = os.path.dirname(folder)
        if (marked and folder == root) or seen[-1] is not None or parent in (folder, home):
            break
        folder = parent
    env_file = os.path.join(root, ".env")
    try:
        with open(env_file, "rb") as f:
            env_text = f.read()
    except OSError:
        env_text = None
    docker_config = os.path.join(
        environ.get("DOCKER_CONFIG") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".docker"),
        "config.json",
    )
    values = [env_text, [environ.get(n) for n in names]]
    return (FORMAT, _code(), root, marked, tuple(folders), _stat(docker_config), form, names, _digest(values))


def env_names(setting_keys, env_text: str | None) -> tuple:
    """The environment variables the settings may read: every setting, the engine's, and any `${NAME}` the env
    file interpolates."""
    import re

    named = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", env_text or "")
    return tuple(sorted({*setting_keys, *ENGINE_VARS, *named}))


# --- what the engine said ---------------------------------------------------------------------------------


def observe(api, kept: dict) -> tuple | None:
    """The engine's answers to the kept questions, in the form they are kept; None when it cannot be read."""
    from qbctl.stack import rawapi

    listed = api.get_json(kept["list"])
    answers = api.get_many(kept["paths"])
    return signature(listed, kept["paths"], answers, rawapi.decode) if api.server.startswith("Docker/") else None


def signature(listed: list, paths: list, answers: list, decode) -> tuple:
    """What planning a warm `up` depends on, from the engine's answers to warm.py's questions (`paths`)."""
    containers = []
    for c in listed:
        labels = c.get("Labels") or {}
        health = health_of(c.get("Status", ""))
        containers.append((c.get("Id"), c.get("State"), health, c.get("ImageID"), tuple(sorted(labels.items()))))
    said: list = []
    for asked, (status, body) in zip(paths, answers, strict=True):
        if status != 200:
            said.append(status)
            continue
        data = decode(status, body)
        if asked.startswith("/volumes"):  # PostgreSQL's data volumes: their names and labels
            volumes = data.get("Volumes") or []
            said.append(tuple(sorted((v["Name"], tuple(sorted((v.get("Labels") or {}).items()))) for v in volumes)))
        elif asked.startswith("/containers/"):  # a UI: still running, never restarted, never killed
            st = data.get("State") or {}
            said.append((st.get("Status"), data.get("RestartCount"), st.get("OOMKilled")))
        else:  # an image: its ID
            said.append(data.get("Id"))
    return tuple(sorted(containers)), tuple(said)


# --- keeping and reading ---------------------------------------------------------------------------------


def path(root: str) -> str:
    return os.path.join(root, localstate.FOLDER, FILE)


def keep(root: str, record: dict) -> None:
    """Write the answer (a crash mid-write leaves the old one or none: written aside, then renamed)."""
    folder = os.path.join(root, localstate.FOLDER)
    try:
        os.makedirs(folder, exist_ok=True)
        localstate.ignore_in_git(folder)
        tmp = path(root) + f".{os.getpid()}"
        with open(tmp, "wb") as f:
            marshal.dump(record, f)
        os.replace(tmp, path(root))
    except OSError:
        pass  # a read-only project: nothing is kept, every warm `up` works its answer out


def forget(root: str) -> None:
    try:
        os.unlink(path(root))
    except OSError:
        pass


def _find(start: str) -> tuple[str, dict] | None:
    """The kept answer for an `up` started in `start`: in `.qbctl` of `start` or a folder above it."""
    folder = start
    home = os.path.expanduser("~")
    while True:
        try:
            with open(path(folder), "rb") as f:
                record = marshal.load(f)
            return (folder, record) if isinstance(record, dict) and record.get("format") == FORMAT else None
        except FileNotFoundError:
            pass
        except (OSError, ValueError, EOFError, TypeError):
            return None
        parent = os.path.dirname(folder)
        if parent == folder or parent == home or os.path.exists(os.path.join(folder, ".git")):
            return None
        folder = parent


def answer(form: tuple, environ=os.environ) -> dict | None:
    """The kept answer to this `up`, with this run's times, when nothing it was made from has changed."""
    t0 = time.monotonic()
    named = environ.get("QBCTL_PROJECT_DIR")
    start = os.path.abspath(os.path.expanduser(named)) if named else os.getcwd()
    found = _find(start)
    if found is None:
        return None
    root, memo = found
    kept = memo.get("answers", {}).get((start, form))
    if kept is None or inputs(root, start, form, kept["names"], kept["marked"], environ) != kept["inputs"]:
        return None
    import fcntl

    from qbctl.stack import rawapi

    with open(kept["lock"], "a+") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # another qbctl is changing the project
        try:
            probing = rawapi.http_statuses_start(kept["probes"])
            try:
                with rawapi.RawEngine(kept["socket"]) as api:
                    said = observe(api, kept)
            finally:
                statuses = rawapi.http_statuses_end(probing)
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
    if said != kept["engine"] or any(s != 200 for s in statuses):
        return None
    seconds = round(time.monotonic() - t0, 3)
    result = kept["result"]
    for service in result["services"]:
        if service["name"] in kept["probed"]:
            service["seconds"] = seconds
    result["timings"] = {"images": seconds, "start": seconds, "ready": seconds}
    events = [(status, ready_text(seconds) if text is None else text, svc) for status, text, svc in kept["events"]]
    return {"result": result, "events": events, "warnings": kept["warnings"]}


def answers_of(root: str) -> dict:
    """The answers kept for a project (a new one is added beside them; at most a few working folders)."""
    try:
        with open(path(root), "rb") as f:
            record = marshal.load(f)
    except (OSError, ValueError, EOFError, TypeError):
        return {}
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return {}
    answers = record.get("answers")
    return dict(list(answers.items())[-7:]) if isinstance(answers, dict) else {}
