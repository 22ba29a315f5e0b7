"""The labels qbctl puts on every object it creates, and the filters that find them again.

Only objects carrying LABEL_PROJECT=<project> are ever changed or removed.
"""

from __future__ import annotations

LABEL_PROJECT = "io.qbctl.project"
LABEL_SERVICE = "io.qbctl.service"
LABEL_CONFIG = "io.qbctl.config-hash"  # changes whenever the container would be created differently
LABEL_PG_MAJOR = "io.qbctl.pg-major"  # on a PostgreSQL volume: the major of the image that made it
# The lock on a (remote) engine: a container named <project>-lock, never started, whose creation is atomic.
LABEL_LOCK = "io.qbctl.lock"  # the project it locks (not LABEL_PROJECT: down and reset must not remove it)
LABEL_LOCK_HOLDER = "io.qbctl.lock.holder"  # user@host pid N
LABEL_LOCK_SINCE = "io.qbctl.lock.since"  # epoch seconds
LABEL_LOCK_EXPIRES = "io.qbctl.lock.expires"  # epoch seconds: a crashed holder's lock is taken after this
LABEL_LOCK_IMAGE = "io.qbctl.lock-image"  # the empty image lock containers are made from
LABEL_PG_IMAGE = "io.qbctl.pg-image"  # on a PostgreSQL volume: the image reference that made it
LABEL_PG_IMAGE_ID = "io.qbctl.pg-image-id"  # ... and that image's ID (a moved tag still finds the old image)
LABEL_HELPER = "io.qbctl.helper"  # on a temporary container (snapshot, upgrade): what it is for


def project_filter(project: str, service: str | None = None) -> dict:
    labels = [f"{LABEL_PROJECT}={project}"]
    if service:
        labels.append(f"{LABEL_SERVICE}={service}")
    return {"label": labels}
