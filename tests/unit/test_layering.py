"""The architecture docs/architecture.md describes, checked on the code itself (ast, no imports run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "qbctl"
MODULES = sorted(PKG.rglob("*.py"))
# May use typer / rich and write to streams: the edge, and the developers' docs generators (the settings table, the
# command reference, which reads the Typer app).
EDGE = {"cli.py", "launch.py", "output.py", "views.py", "context.py", "config/docs.py", "reference.py"}
HEAVY = ("docker", "psycopg", "redis", "yaml", "rich")  # imported inside the functions that need them


# The layer table of docs/architecture.md, low to high. A module imports from its own layer or lower ones only,
# counting imports inside functions: qbctl's are lazy (fast start), and a lazy import is a dependency all the same.
LAYERS = [
    ("vocabulary", {"__init__", "errors", "events", "result", "localstate"}),  # what every layer speaks
    ("config", {"config"}),
    ("transport", {"transport"}),  # which engine, how this process reaches the engine's host (ssh tunnels)
    ("engine", {"engine"}),
    ("db", {"db"}),
    ("stack", {"stack"}),
    ("checks and snapshots", {"checks", "snapshots"}),
    ("workflows", {"workflows"}),  # reset, db reset, restore, upgrade, rehearse, ci: they combine the layers below
    (
        "commands and the edge",
        {"commands", "cli", "launch", "context", "output", "views", "reference", "pytest_plugin", "__main__"},
    ),
]
LAYER_OF = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}


def rel(path: Path) -> str:
    return str(path.relative_to(PKG))


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def imports(node: ast.AST) -> list[str]:
    out = []
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            out += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            out.append(n.module)
    return out


def top_level_imports(module: ast.Module) -> list[str]:
    return [name for stmt in module.body if isinstance(stmt, (ast.Import, ast.ImportFrom)) for name in imports(stmt)]


def is_logic(path: Path) -> bool:
    return rel(path) not in EDGE and not rel(path).startswith("commands/") and path.name != "__main__.py"


def unit_of(module: str) -> str:
    """The package (`stack`) or root module (`cli`) a dotted qbctl module belongs to; `__init__` for qbctl itself."""
    parts = module.split(".")[1:]
    if not parts:
        return "__init__"
    return parts[0] if (PKG / parts[0]).is_dir() or (PKG / f"{parts[0]}.py").is_file() else "__init__"


def qbctl_imports(path: Path) -> set[str]:
    """The units a module imports from, anywhere in it (inside functions too)."""
    out = set()
    for n in ast.walk(tree(path)):
        if isinstance(n, ast.Import):
            out |= {unit_of(a.name) for a in n.names if a.name.split(".")[0] == "qbctl"}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0 and n.module.split(".")[0] == "qbctl":
            if n.module == "qbctl":
                out |= {unit_of(f"qbctl.{a.name}") for a in n.names}
            else:
                out.add(unit_of(n.module))
    return out


def own_unit(path: Path) -> str:
    parts = path.relative_to(PKG).parts
    return parts[0] if len(parts) > 1 else path.stem


def test_every_module_has_a_layer():
    assert not {own_unit(p) for p in MODULES} - set(LAYER_OF), "a new package or root module: give it a layer"


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_no_module_imports_a_higher_layer(path):
    mine = LAYER_OF[own_unit(path)]
    higher = sorted(u for u in qbctl_imports(path) if LAYER_OF[u] > mine)
    assert not higher, f"{rel(path)} ({LAYERS[mine][0]}) imports {higher} from a higher layer"


def test_no_cycle_between_packages():
    packages = {p.parent.name for p in PKG.glob("*/__init__.py")}
    graph: dict[str, set[str]] = {pkg: set() for pkg in packages}
    for p in MODULES:
        if own_unit(p) in packages:
            graph[own_unit(p)] |= (qbctl_imports(p) & packages) - {own_unit(p)}
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(pkg: str, path: list[str]) -> None:
        seen[pkg] = 1
        for nxt in sorted(graph[pkg]):
            assert seen.get(nxt) != 1, "a cycle between packages: " + " -> ".join(path + [pkg, nxt])
            if nxt not in seen:
                visit(nxt, path + [pkg])
        seen[pkg] = 2

    for pkg in sorted(graph):
        if pkg not in seen:
            visit(pkg, [])


def test_only_the_engine_package_talks_to_the_docker_sdk():
    users = [rel(p) for p in MODULES if any(i == "docker" or i.startswith("docker.") for i in imports(tree(p)))]
    assert users and all(u.startswith("engine/") for u in users), users


@pytest.mark.parametrize("path", [p for p in MODULES if is_logic(p)], ids=rel)
def test_logic_never_imports_typer_or_rich_and_never_prints(path):
    module = tree(path)
    assert not [i for i in imports(module) if i.split(".")[0] in ("typer", "rich", "click")]
    calls = [n for n in ast.walk(module) if isinstance(n, ast.Call)]
    assert not [c for c in calls if isinstance(c.func, ast.Name) and c.func.id == "print"]
    streams = [
        n
        for n in ast.walk(module)
        if isinstance(n, ast.Attribute)
        and n.attr in ("stdout", "stderr")
        and isinstance(n.value, ast.Name)
        and n.value.id == "sys"
    ]
    assert not streams, f"{rel(path)} writes to sys.stdout/stderr: return data, render it at the edge"


@pytest.mark.parametrize("path", sorted(p for p in (PKG / "commands").glob("*.py") if p.name != "base.py"), ids=rel)
def test_commands_are_thin_and_print_nothing_themselves(path):
    module = tree(path)
    calls = [n for n in ast.walk(module) if isinstance(n, ast.Call)]
    assert not [c for c in calls if isinstance(c.func, ast.Name) and c.func.id == "print"]
    writes = [c for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr in ("line", "table", "emit_json")]
    assert not writes, "commands hand results to finish(); views.py draws them"
    for fn in (n for n in module.body if isinstance(n, ast.FunctionDef)):
        # The body, not the signature: Typer's options are declarations, one per line once formatted.
        assert fn.end_lineno - fn.body[0].lineno < 35, f"{fn.name} is long for a command: move logic out"


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_heavy_libraries_are_imported_where_they_are_used(path):
    """`qbctl --help` must not pay for docker, psycopg, redis, yaml or rich."""
    heavy = [i for i in top_level_imports(tree(path)) if i.split(".")[0] in HEAVY]
    assert not heavy, f"{rel(path)} imports {heavy} at module level"


def test_connections_are_made_in_one_place():
    makers = {"psycopg.connect": [], "redis.Redis": []}
    for p in MODULES:
        for n in ast.walk(tree(p)):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name):
                name = f"{n.func.value.id}.{n.func.attr}"
                if name in makers:
                    makers[name].append(rel(p))
    assert makers == {"psycopg.connect": ["db/connect.py"], "redis.Redis": ["db/connect.py"]}


def test_labels_are_spelled_in_one_place():
    spelled = [rel(p) for p in MODULES if '"io.qbctl.' in p.read_text()]
    assert spelled == ["engine/labels.py"]


def test_error_classes_live_in_errors_py():
    from qbctl.errors import QbctlError

    for p in MODULES:
        if rel(p) == "errors.py":
            continue
        for cls in (n for n in ast.walk(tree(p)) if isinstance(n, ast.ClassDef)):
            bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in cls.bases}
            assert not bases & {"QbctlError", "CheckFailed", "Unavailable", "ConfigError", "UsageError"}, (
                f"{rel(p)} defines the error {cls.name}: errors.py holds them all"
            )
    assert QbctlError.__subclasses__()


def test_subpackage_init_files_are_empty():
    """Importing qbctl.db must not import every module in it (start-up time)."""
    for init in PKG.glob("*/__init__.py"):
        assert init.read_text().strip() == "", init


def test_every_result_carries_a_typed_error():
    import dataclasses
    import importlib

    from qbctl.result import Result

    for p in MODULES:
        name = "qbctl." + rel(p)[:-3].replace("/", ".")
        if name.endswith("__main__"):
            continue
        mod = importlib.import_module(name)
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, Result) and obj is not Result and obj.__module__ == name:
                hints = {f.name: f.type for f in dataclasses.fields(obj)}
                assert (
                    "error" in hints and "QbctlError" in str(hints["error"]) or "ConfigError" in str(hints["error"])
                ), f"{name}.{obj.__name__}: error must be a QbctlError"


def _runtime_module_imports(path: Path) -> set[str]:
    """The qbctl modules a module imports at run time (inside functions too; `if TYPE_CHECKING:` left out)."""
    module = tree(path)
    typing_only = {
        id(n)
        for stmt in ast.walk(module)
        if isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Name) and stmt.test.id == "TYPE_CHECKING"
        for n in ast.walk(stmt)
    }
    out = set()
    for n in ast.walk(module):
        if id(n) in typing_only:
            continue
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names if a.name.startswith("qbctl.")}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0 and n.module.split(".")[0] == "qbctl":
            for a in n.names:  # `from qbctl.checks import model` names a module; `from qbctl.x import f` does not
                full = f"{n.module}.{a.name}"
                out.add(full if (PKG.parent / (full.replace(".", "/") + ".py")).is_file() else n.module)
    return out


# The entry point's pair: launch.run falls back to cli, and cli leaves through launch.leave (a light module
# that a warm `up` imports without Typer).
MODULE_CYCLES_ALLOWED = [{"qbctl.cli", "qbctl.launch"}]


def test_no_cycle_between_modules():
    """No module imports, at run time, one that imports it back (budget -> load -> load_redis -> budget was one)."""
    names = {p: ".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__") for p in MODULES}
    graph = {names[p]: _runtime_module_imports(p) - {names[p]} for p in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(comp)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    assert [c for c in cycles if c not in MODULE_CYCLES_ALLOWED] == [], cycles


MUTABLE_CALLS = {"dict", "list", "set", "defaultdict", "OrderedDict", "deque", "Lock", "RLock", "WeakValueDictionary"}


def _mutable(value: ast.expr | None) -> bool:
    """A dict/list/set literal or comprehension, or a call that makes a container or a lock."""
    if isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)):
        return True
    if isinstance(value, ast.Call):
        f = value.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        return name in MUTABLE_CALLS
    return False


@pytest.mark.parametrize("path", sorted((PKG / "transport").glob("*.py")), ids=rel)
def test_transport_keeps_no_module_level_registry(path):
    """Which engine a run resolved and the ssh tunnels it opened belong to the run's Runtime (its `reach`), never
    to a module: no module-level dict, list, set or lock in transport/ (constants, tuples and strings are fine)."""
    found = []
    for stmt in tree(path).body:
        if isinstance(stmt, ast.Assign):
            value = stmt.value
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            value = stmt.value
        else:
            continue
        if _mutable(value):
            found.append(f"line {stmt.lineno}: {ast.unparse(stmt)[:80]}")
    assert not found, f"{rel(path)} keeps state at module level (give it to the Runtime's Reach): {found}"


def test_the_registry_check_sees_one():
    module = ast.parse("import threading\n_cache: dict = {}\n_lock = threading.Lock()\nNAMES = ('a',)\n")
    assert [_mutable(s.value) for s in module.body[1:]] == [True, True, False]
