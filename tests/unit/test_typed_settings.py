"""Settings are read by attribute (`settings.values.qbctl_up_timeout`), typed, never by a string key."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from qbctl.config import docs
from qbctl.config.settings import PARSERS, SETTINGS, Settings, load
from qbctl.config.values import Values

PACKAGE = Path(__file__).resolve().parents[2] / "qbctl"
# The names a Settings object goes by in qbctl: settings, self.settings, ctx._settings (and settings.values).
SETTINGS_NAMES = {"settings", "_settings"}
# What may be indexed by a setting's name: its text and where it came from (config show), its row of SETTINGS.
KEYED_BY_NAME = {"raw", "sources", "BY_KEY"}


def _name(node: ast.expr) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def _names_settings(node: ast.expr) -> bool:
    if isinstance(node, ast.Attribute) and node.attr == "values":
        node = node.value
    return _name(node) in SETTINGS_NAMES


def _string_lookups(tree: ast.AST) -> list[tuple[int, str]]:
    """`settings["KEY"]`, `settings.get("KEY")`, `getattr(settings, "...")` and the same on `.values`."""
    found = []
    keys = {s.key for s in SETTINGS}
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            key = node.slice
            by_name = isinstance(key, ast.Constant) and key.value in keys and _name(node.value) not in KEYED_BY_NAME
            if _names_settings(node.value) or by_name:
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Call):
            func = node.func
            on_values = (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Attribute)
                and func.value.attr == "values"
            )
            if (
                isinstance(func, ast.Attribute)
                and func.attr in ("get", "__getitem__")
                and (_names_settings(func.value) or on_values)
            ):
                found.append((node.lineno, ast.unparse(node)))
            elif isinstance(func, ast.Name) and func.id == "getattr" and node.args and _names_settings(node.args[0]):
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_string_keyed_settings_lookup_in_qbctl():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, text in _string_lookups(ast.parse(path.read_text(), str(path))):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {text}")
    assert not found, "read settings by attribute (settings.values.<name>), not by key:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        'settings["QBCTL_UP_TIMEOUT"]',
        'self.settings.get("REDIS_URL")',
        'ctx._settings.values["DATABASE_URL"]',
        'getattr(settings, "x")',
        's["QBCTL_PROJECT"]',
        's.values.get("x")',
    ],
)
def test_the_walk_finds_a_string_lookup(source):
    assert _string_lookups(ast.parse(source))


def test_settings_cannot_be_indexed():
    assert not hasattr(Settings, "__getitem__") and not hasattr(Settings, "get")
    assert not hasattr(Values, "__getitem__")
    with pytest.raises(TypeError):
        load(environ={}, cwd=Path("/nonexistent-qbctl-test"))["QBCTL_UP_TIMEOUT"]  # type: ignore[index]


def test_values_has_one_typed_field_per_setting():
    fields = dataclasses.fields(Values)
    assert [f.name for f in fields] == [s.key.lower() for s in SETTINGS]
    assert {s.kind for s in SETTINGS} <= set(PARSERS)
    for f, s in zip(fields, SETTINGS, strict=True):
        assert f.type == docs.KIND_TYPES.get(s.kind, "str"), s.key


def test_values_are_the_parsed_settings():
    settings = load(environ={"QBCTL_UP_TIMEOUT": "45"}, cwd=Path("/nonexistent-qbctl-test"))
    assert settings.values.qbctl_up_timeout == 45
    for s in SETTINGS:
        value = getattr(settings.values, s.key.lower())
        assert value == PARSERS[s.kind](settings.raw[s.key].strip()), s.key
        assert type(value).__name__ == docs.KIND_TYPES.get(s.kind, "str"), s.key
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.values.qbctl_up_timeout = 1  # type: ignore[misc]


def test_values_module_is_made_from_the_settings_table():
    assert (PACKAGE / "config" / "values.py").read_text() == docs.values_module(), (
        "stale: run python -m qbctl.config.docs"
    )
