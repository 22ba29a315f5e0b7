"""Reading PostgreSQL's syntax trees (pglast's nodes) for db lint: names, literals, calls, options. Pure."""

from __future__ import annotations


def name(node) -> str | None:
    """A relation named by a RangeVar, a string literal ('public.t') or a cast of one ('t'::regclass)."""
    from pglast import ast

    if isinstance(node, ast.RangeVar):
        return node.relname
    if isinstance(node, ast.TypeCast):
        return name(node.arg)
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
        text = (node.val.sval or "").split(".")[-1].strip()
        return text[1:-1] if text.startswith('"') else text.lower()
    return None


def literal(node) -> str | None:
    from pglast import ast

    if isinstance(node, ast.TypeCast):
        return literal(node.arg)
    if isinstance(node, ast.A_Const):
        v = node.val
        for attr in ("sval", "ival", "fval", "boolval"):
            if v is not None and getattr(v, attr, None) is not None:
                return str(getattr(v, attr))
    return None


def args(call) -> tuple[list, dict]:
    from pglast import ast

    pos, named = [], {}
    for a in call.args or ():
        if isinstance(a, ast.NamedArgExpr):
            named[a.name] = a.arg
        else:
            pos.append(a)
    return pos, named


def calls(node) -> list:
    """Every function call in a statement, nested ones included."""
    from pglast import ast
    from pglast.visitors import Visitor

    found = []

    class Calls(Visitor):
        def visit_FuncCall(self, ancestors, call):  # noqa: N802 - pglast's naming
            found.append(call)

    Calls()(node)
    return [c for c in found if isinstance(c, ast.FuncCall)]


def func(call) -> str:
    return call.funcname[-1].sval.lower()


def columns(node) -> set[str]:
    """The column names a query or expression refers to (the last part of each reference; * as '*')."""
    from pglast import ast
    from pglast.visitors import Visitor

    found: set[str] = set()

    class Refs(Visitor):
        def visit_ColumnRef(self, ancestors, ref):  # noqa: N802
            last = ref.fields[-1]
            found.add("*" if isinstance(last, ast.A_Star) else last.sval)

    Refs()(node)
    return found


def options(defs) -> dict[str, str | None]:
    """WITH (...) / SET (...) options, their namespace dropped: {'compress': None, 'segmentby': 'a, b'}."""
    out = {}
    for d in defs or ():
        value = d.arg
        text = None
        if value is not None:
            text = getattr(value, "sval", None) or literal(value)
            if text is None and hasattr(value, "val"):
                text = str(value.val)
            if text is None and hasattr(value, "boolval"):
                text = str(value.boolval)
        out[d.defname.lower()] = text
    return out


def false(value: str | None) -> bool:
    return (value or "").strip().lower() in ("false", "off", "0", "no", "f")


def column_list(text: str | None) -> set[str]:
    """'time DESC, symbol' -> {'time', 'symbol'}."""
    out = set()
    for part in (text or "").split(","):
        words = part.strip().split()
        if words:
            out.add(words[0].strip('"'))
    return out
