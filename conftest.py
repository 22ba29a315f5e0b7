"""qbctl's own tests are collected only when pytest runs for qbctl itself.

qbctl lives inside the backend's repository (tools/qbctl). A `pytest` at the backend's root, with
no `testpaths` of its own, would walk into tools/qbctl/tests as well and run qbctl's suite (Docker
stacks, SSH labs, 20 minutes) beside the backend's. So this folder's tests are skipped unless
pytest's rootdir is this folder: `python -m pytest` here (its pyproject.toml makes it the
rootdir), or `pytest tools/qbctl/tests` from the backend, which finds the same pyproject.toml.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    if collection_path.parent.resolve() == HERE and config.rootpath.resolve() != HERE:
        return True  # tests/, bench/, ...: qbctl's, not the project's that runs pytest
    return None
