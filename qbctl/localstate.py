"""The project's `.qbctl/` folder: qbctl's local state (snapshots, a warm `up`'s kept answer), never git's."""

from __future__ import annotations

import os

FOLDER = ".qbctl"


def ignore_in_git(folder: str) -> None:
    """`.qbctl/` keeps a .gitignore of its own, so that no checkout commits what is in it."""
    ignore = os.path.join(folder, ".gitignore")
    if not os.path.exists(ignore):
        with open(ignore, "w") as f:
            f.write("# qbctl's local state (snapshots of your data, a warm `up`'s kept answer): not for git\n*\n")
