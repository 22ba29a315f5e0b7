"""The lock on a remote engine: a container named <project>-lock, never started, made from an empty image.

The engine creates a name once, atomically, so whoever creates it holds the project's lock; its labels say who
(user@host, pid), since when and until when. engine/lock.py takes it (`engine_lock`) for a remote engine, and
takes a file lock on this machine for a local one. Apart from lock.py so that a warm `up` (stack/warm.py), which
takes the local lock, imports nothing of the engine's calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qbctl.engine.connection import engine_call
from qbctl.engine.labels import LABEL_LOCK, LABEL_LOCK_IMAGE
from qbctl.errors import NotOwned, Unavailable

if TYPE_CHECKING:
    from qbctl.engine.facade import Engine


@engine_call("taking the project's lock")
def try_lock(eng: Engine, project: str, labels: dict[str, str]) -> tuple[str | None, dict]:
    """Create the never-started container <project>-lock: the engine makes a name unique
    atomically. (its id, {}) when taken now; (None, the holder's labels with its "id") when held."""
    from docker.errors import APIError, NotFound

    name = f"{project}-lock"
    try:
        cid = eng.api.create_container(
            _lock_image(eng), command=["lock"], name=name, labels={LABEL_LOCK: project, **labels}
        )["Id"]
        return cid, {}
    except APIError as exc:
        if exc.status_code != 409 and "already in use" not in str(exc):
            raise
    try:
        info = eng.api.inspect_container(name)
    except NotFound:
        return None, {}  # released in between: the caller tries again
    found = info["Config"].get("Labels") or {}
    if found.get(LABEL_LOCK) != project:
        raise NotOwned(
            f"a container named {name} exists and is not qbctl's lock of project {project}",
            hint="qbctl never touches it: remove or rename it yourself, or use --project OTHER",
        )
    return None, {**found, "id": info["Id"]}


@engine_call("releasing the project's lock")
def unlock(eng: Engine, lock_id: str) -> None:
    from docker.errors import NotFound

    try:
        eng.api.remove_container(lock_id, force=True)
    except NotFound:
        pass


def _lock_image(eng: Engine) -> str:
    """The empty image lock containers are made from (imported once per engine: no pull, no layers)."""
    import io
    import re
    import tarfile

    found = eng.api.images(filters={"label": f"{LABEL_LOCK_IMAGE}=1"})
    if found:
        return found[0]["Id"]
    buf = io.BytesIO()
    tarfile.open(fileobj=buf, mode="w").close()
    out = eng.api.import_image_from_data(buf.getvalue(), changes=[f"LABEL {LABEL_LOCK_IMAGE}=1"])
    found = eng.api.images(filters={"label": f"{LABEL_LOCK_IMAGE}=1"})
    if found:
        return found[0]["Id"]
    ids = re.findall(r"sha256:[0-9a-f]{64}", str(out))
    if not ids:
        raise Unavailable(
            f"the engine at {eng.where} did not import the lock image: {str(out)[:200]}", code="ENGINE_ERROR"
        )
    return ids[-1]
