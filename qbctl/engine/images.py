"""Images: inspected, or pulled with progress as events."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qbctl.engine.connection import engine_call
from qbctl.errors import Unavailable
from qbctl.events import Event, Events, Status, ignore

if TYPE_CHECKING:
    from qbctl.engine.facade import Engine
    from qbctl.engine.objects import ServiceLike


@engine_call("inspecting an image")
def info(eng: Engine, image: str) -> dict | None:
    from docker.errors import ImageNotFound

    try:
        return eng.api.inspect_image(image)
    except ImageNotFound:
        return None


def pull(eng: Engine, spec: ServiceLike, events: Events = ignore) -> dict:
    """Pull spec.image (progress as `pulling` events with bytes) and return its inspect data; on
    failure name the image and the setting."""
    from docker.errors import APIError, DockerException

    repo, _, tag = spec.image.rpartition(":") if ":" in spec.image.rsplit("/", 1)[-1] else (spec.image, "", "latest")
    try:
        for event in eng.api.pull(repo, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise APIError(event["error"])
            detail = event.get("progressDetail") or {}
            text = f"{event.get('status', '')} {event.get('progress', '')}".strip()
            events(Event(Status.PULLING, text, spec.name, detail.get("current"), detail.get("total")))
    except (DockerException, OSError) as exc:
        reason = getattr(exc, "explanation", None) or str(exc)
        raise Unavailable(
            f"cannot pull image {spec.image} for {spec.name}: {str(reason)[:300]}",
            code="IMAGE_UNAVAILABLE",
            hint=f"set {spec.image_setting} to an image this engine has (docker images) "
            "or to a registry mirror it can reach",
        ) from None
    found = eng.image_info(spec.image)
    if not found:
        raise Unavailable(f"pulled {spec.image} but the engine does not list it", code="IMAGE_UNAVAILABLE")
    return found


def pull_reference(eng: Engine, reference: str) -> dict | None:
    """Pull an image by its full reference (repo@sha256:digest); its inspect data, or None when the
    engine cannot get it (the reason in `eng.last_pull_error`)."""
    from docker.errors import APIError, DockerException

    repo, _, digest = reference.partition("@")
    try:
        for event in eng.api.pull(repo, tag=digest or "latest", stream=True, decode=True):
            if "error" in event:
                raise APIError(event["error"])
    except (DockerException, OSError) as exc:
        eng.last_pull_error = str(getattr(exc, "explanation", None) or exc)[:300]
        return None
    return eng.image_info(reference)
