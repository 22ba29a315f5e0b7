"""Does a data volume fit the image about to run on it? Checked before PostgreSQL starts.

A volume made by qbctl records the PostgreSQL major of the image that created it, and that
image's reference and ID. A volume from elsewhere, or an image that does not say, is caught
after the fact from the server's own log line.

The TimescaleDB version is the data's, not the image's word for it (the timescale/timescaledb
images set no variable that says it): once the server runs, the version the database's extension
is at (pg_extension) against the one the image offers (pg_available_extensions) (`timescaledb_behind`,
after `up` started PostgreSQL on a volume that held data). A version whose library the image lacks
stops the server, and its log line says so (`classify`).

Which volume PostgreSQL runs on: `<project>_pgdata`, the one the project started with, unless
`qbctl upgrade` moved the data to a newer major, into `<project>_pgdata_pg<major>`; the image's
major picks its volume (`data_volume`). So pinning the old image again finds the old data,
which the upgrade keeps until the user removes it.
"""

from __future__ import annotations

from typing import Callable

from qbctl.engine.labels import LABEL_PG_IMAGE, LABEL_PG_IMAGE_ID, LABEL_PG_MAJOR
from qbctl.errors import VolumeIncompatible


def ways_out(volume: str, old_major: str | None) -> str:
    pin = (
        f"pin the old image (QBCTL_POSTGRES_IMAGE=timescale/timescaledb:latest-pg{old_major})"
        if old_major
        else "pin the image that created it (QBCTL_POSTGRES_IMAGE)"
    )
    return (
        f"`qbctl upgrade` moves the data to the image's version (dumps with the old image, restores into a new "
        f"volume, keeps {volume}); or {pin}; or `qbctl reset` to start from an empty volume (deletes the data in "
        f"{volume}, after a snapshot)"
    )


def created_by(image_env: dict[str, str], image: str = "", image_id: str = "") -> dict[str, str]:
    """The labels recorded on a new PostgreSQL volume."""
    labels = {}
    if image_env.get("PG_MAJOR"):
        labels[LABEL_PG_MAJOR] = image_env["PG_MAJOR"]
    if image:
        labels[LABEL_PG_IMAGE] = image
    if image_id:
        labels[LABEL_PG_IMAGE_ID] = image_id
    return labels


def image_env(info: dict | None) -> dict[str, str]:
    """An image's environment (from its inspect data) as a dict."""
    env = ((info or {}).get("Config") or {}).get("Env") or []
    return dict(e.split("=", 1) for e in env if "=" in e)


def upgraded_name(project: str, major: str) -> str:
    return f"{project}_pgdata_pg{major}"


def data_volume(project: str, major: str | None, existing: dict[str, dict]) -> str:
    """The volume PostgreSQL `major` runs on: the one an upgrade made for it, else `<project>_pgdata`."""
    moved = upgraded_name(project, major) if major else None
    if moved and moved in existing:
        return moved
    return f"{project}_pgdata"


def recorded_image(labels: dict[str, str], present: Callable[[str], bool]) -> str | None:
    """The image that made a volume, if the engine still has it: by ID first (a tag may have moved)."""
    for key in (LABEL_PG_IMAGE_ID, LABEL_PG_IMAGE):
        ref = labels.get(key)
        if ref and present(ref):
            return ref
    return None


def check(volume: str, labels: dict[str, str], image: str, image_env: dict[str, str]) -> None:
    """Raise VOLUME_INCOMPATIBLE when the volume holds another PostgreSQL major's data than the image runs."""
    have, want = labels.get(LABEL_PG_MAJOR), image_env.get("PG_MAJOR")
    if have and want and have != want:
        raise VolumeIncompatible(
            f"volume {volume} holds PostgreSQL {have} data, but {image} runs PostgreSQL {want}; nothing was started",
            hint=ways_out(volume, have),
            volume=volume,
            volume_pg_major=have,
            image_pg_major=want,
        )


# The version of TimescaleDB the database's extension is at, and the one the image offers.
TSDB_VERSIONS_SQL = (
    "SELECT e.extversion, a.default_version FROM pg_extension e"
    " JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'timescaledb'"
)


def timescaledb_behind(database: str, installed: str | None, offered: str | None) -> str | None:
    """A warning when the data's TimescaleDB is older than the image's, else None. Pure."""
    if not installed or not offered or _version(installed) >= _version(offered):
        return None
    return (
        f"database {database} uses TimescaleDB {installed}, the image ships {offered}: `qbctl upgrade` updates "
        "it (ALTER EXTENSION timescaledb UPDATE as the first command of a new session, after a snapshot)"
    )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("-")[0].split(".") if p.isdigit())


def classify(logs: list[str], volume: str) -> VolumeIncompatible | None:
    """Recognise a data directory the server cannot use, from its last log lines."""
    text = "\n".join(logs)
    if "database files are incompatible with server" in text:
        old = None
        for line in logs:
            if "initialized by PostgreSQL version" in line:
                old = line.split("initialized by PostgreSQL version")[1].split(",")[0].strip()
        return VolumeIncompatible(
            f"volume {volume} holds data of another PostgreSQL major version"
            + (f" ({old})" if old else "")
            + " than the image",
            hint=ways_out(volume, old),
            volume=volume,
        )
    if 'could not access file "$libdir/timescaledb' in text:
        return VolumeIncompatible(
            f"volume {volume} uses a TimescaleDB version that the image does not ship",
            hint="pin the image with that TimescaleDB version (QBCTL_POSTGRES_IMAGE), start it, run ALTER "
            "EXTENSION timescaledb UPDATE as the first command of a new session, then move to the new image",
            volume=volume,
        )
    return None
