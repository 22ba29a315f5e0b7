"""How a migration file runs: in one transaction, or statement by statement; and what is refused.

- A file runs in one transaction of qbctl's own, with its tracking row, unless it is marked
  `-- qbctl: no-transaction` (or goose's, dbmate's marker), holds a statement the server refuses in a
  transaction block, or stopped part way before.
- A file wrapped whole in its own `BEGIN; ... COMMIT;` (`START TRANSACTION`, `END`) is that same one
  transaction, as psql runs it: the wrapper's modes (`BEGIN ISOLATION LEVEL SERIALIZABLE`) apply.
- Any other transaction control in such a file is refused before anything runs: a COMMIT in the middle
  would commit half of it.
- Statement by statement, each statement commits by itself (with its progress row; a statement that
  cannot run in a transaction block, and a CALL or DO, whose procedure may COMMIT, runs outside one and
  is recorded right after); a `BEGIN ... COMMIT` group is one transaction; a COMMIT outside a group does
  nothing (as under psql).

A refusal offers fixes, and offers only those that work: each is applied to the statements here and
planned again before it is named (`_fixes`). Pure: statements in, a plan or a Refused out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from qbctl.db import statements as sql
from qbctl.db.statements import Statement

NO_TX_MARKER = "-- qbctl: no-transaction"
_MODES = re.compile(r"^(?:BEGIN|START)(?:\s+(?:WORK|TRANSACTION))?\s*(.*)$", re.I | re.S)


@dataclass(frozen=True)
class Plan:
    stepwise: str | None  # why it runs statement by statement; None: one transaction
    steps: list[tuple[int, int, bool]] = field(default_factory=list)  # (first, end, outside a transaction)
    modes: str = ""  # one transaction: the modes of the file's own BEGIN (SET TRANSACTION ...)


class Refused(Exception):
    def __init__(self, index: int, what: str, fixes: list[str]):
        super().__init__(what)
        self.index, self.what, self.fixes = index, what, fixes


def plan(sts: list[Statement], marker: str | None, partial: bool = False) -> Plan:
    """How the statements run; Refused (with the fixes that work) when they cannot run as written."""
    problem = _problem(sts, marker, partial)
    if problem is None:
        return _plan(sts, marker, partial)
    index, what, candidates = problem
    raise Refused(index, what, _fixes(sts, marker, partial, candidates))


# A fix: its words, and the statements and marker it leaves.
Fix = tuple[str, Callable[[list[Statement], str | None], tuple[list[Statement], str | None]]]


def _fixes(sts: list[Statement], marker: str | None, partial: bool, candidates: list[Fix]) -> list[str]:
    out, seen = [], []
    for words, apply in candidates:
        fixed, mark = apply(list(sts), marker)
        same = ([id(st) for st in fixed], mark)  # two wordings of one edit: named once
        if _problem(fixed, mark, partial) is None and same not in seen:
            out.append(words)
            seen.append(same)
    return out


def _plan(sts: list[Statement], marker: str | None, partial: bool) -> Plan:
    outside = [(st, name) for st in sts if (name := sql.outside_transaction(st))]
    why = _stepwise(sts, marker, partial, outside)
    if why is None:
        if _wrapped(sts):
            modes = _MODES.match(sts[0].canonical)
            return Plan(None, [(1, len(sts) - 1, False)], modes.group(1).strip() if modes else "")
        return Plan(None, [(0, len(sts), False)])
    steps: list[tuple[int, int, bool]] = []
    group = None
    for k, st in enumerate(sts):
        c = sql.control(st)
        if c == "begin":
            group = k
        elif c == "commit":
            steps.append((group if group is not None else k, k + 1, False))
            group = None
        elif group is None:  # alone, outside a transaction block: what cannot run in one, and what may COMMIT
            steps.append((k, k + 1, sql.outside_transaction(st) is not None or sql.may_commit(st)))
    return Plan(why, steps)


def _stepwise(sts, marker, partial, outside) -> str | None:
    if marker:
        return f"marked `{marker}`"
    if outside:
        return f"{outside[0][1]} (line {outside[0][0].line}) cannot run in a transaction"
    if partial:
        return "it stopped part way and continues where it stopped"
    return None


def _wrapped(sts: list[Statement]) -> bool:
    controls = [(k, c) for k, st in enumerate(sts) if (c := sql.control(st))]
    return len(sts) >= 2 and controls == [(0, "begin"), (len(sts) - 1, "commit")]


def _word(st: Statement) -> str:
    return st.text.split()[0].upper()


def _problem(sts: list[Statement], marker: str | None, partial: bool) -> tuple[int, str, list[Fix]] | None:
    """The first statement that cannot run as written: (index, what, candidate fixes); None if all can."""
    outside = [(st, name) for st in sts if (name := sql.outside_transaction(st))]
    controls = [k for k, st in enumerate(sts) if sql.control(st)]
    if _stepwise(sts, marker, partial, outside) is None:
        if not controls or _wrapped(sts):
            return None
        k = next((k for k in controls if not (k == 0 and sql.control(sts[0]) == "begin")), None)
        if k is None:  # a BEGIN first, and no COMMIT after it
            return (
                0,
                "BEGIN without a COMMIT at the end of the file",
                [
                    (
                        "end the file with a COMMIT (the file then runs as one transaction, as psql runs it)",
                        _insert_commit(len(sts)),
                    ),
                    ("remove the BEGIN at line " + str(sts[0].line), _without([0])),
                ],
            )
        return (
            k,
            f"{_word(sts[k])} in a file that qbctl runs in one transaction",
            [
                (
                    f"remove the {_word(sts[k])} at line {sts[k].line} (the file then runs as one transaction)",
                    _without([k]),
                ),
                (
                    f"move the {_word(sts[k])} at line {sts[k].line} to the end of the file (the file then runs as one "
                    "transaction, as psql runs it)",
                    _move_to_end(k),
                ),
                (
                    "remove its transaction control statements (" + _lines(sts, controls) + "): qbctl runs the file in "
                    "one transaction of its own",
                    _without(controls),
                ),
                (
                    f"put `{NO_TX_MARKER}` in the file's first comment lines to run it statement by statement "
                    "(a BEGIN ... COMMIT group in it then runs as one transaction)",
                    _marked,
                ),
            ],
        )
    group = None
    for k, st in enumerate(sts):
        c = sql.control(st)
        if c == "begin":
            if group is not None:
                return (
                    k,
                    "BEGIN inside a BEGIN ... COMMIT group",
                    [
                        (
                            f"put a COMMIT before line {st.line} to end the group opened at line {sts[group].line}",
                            _insert_commit(k),
                        ),
                        (f"remove the BEGIN at line {st.line}", _without([k])),
                    ],
                )
            group = k
        elif c == "commit":
            group = None
        elif c:  # rollback, prepare
            why = (
                "a prepared transaction waits for a COMMIT PREPARED no migration sends"
                if c == "prepare"
                else "a migration that undoes itself applies nothing"
            )
            fixes = [(f"remove the {_word(st)} at line {st.line} ({why})", _without([k]))]
            if group is not None:
                fixes.append(
                    (
                        f"remove the {_word(st)} at line {st.line} and the BEGIN at line {sts[group].line}",
                        _without([k, group]),
                    )
                )
                fixes.append((f"replace the {_word(st)} at line {st.line} with COMMIT", _replace_commit(k)))
            return k, f"{_word(st)} in a migration", fixes
        elif group is not None and (name := sql.outside_transaction(st)):
            return (
                k,
                f"{name} inside the BEGIN ... COMMIT group of line {sts[group].line}, which is a transaction",
                [
                    (
                        f"remove the BEGIN at line {sts[group].line} and its COMMIT, so that each statement commits "
                        "by itself",
                        _without_group(group),
                    ),
                    (f"move line {st.line} after the group's COMMIT", _move_after_group(k, group)),
                ],
            )
    if group is not None:
        return (
            group,
            "BEGIN without a COMMIT",
            [
                ("end the group with a COMMIT at the end of the file", _insert_commit(len(sts))),
                (f"remove the BEGIN at line {sts[group].line}", _without([group])),
            ],
        )
    return None


def _lines(sts: list[Statement], indexes: list[int]) -> str:
    return ", ".join(f"{_word(sts[k])} at line {sts[k].line}" for k in indexes)


def _without(indexes: list[int]):
    return lambda sts, marker: ([st for k, st in enumerate(sts) if k not in indexes], marker)


def _marked(sts, marker):
    return sts, NO_TX_MARKER


def _commit(line: int) -> Statement:
    return Statement("COMMIT", line, "COMMIT", "COMMIT")


def _insert_commit(at: int):
    def apply(sts, marker):
        line = sts[at].line if at < len(sts) else (sts[-1].line + 1 if sts else 1)
        return sts[:at] + [_commit(line)] + sts[at:], marker

    return apply


def _move_to_end(at: int):
    return lambda sts, marker: (sts[:at] + sts[at + 1 :] + [sts[at]], marker)


def _replace_commit(at: int):
    return lambda sts, marker: (sts[:at] + [_commit(sts[at].line)] + sts[at + 1 :], marker)


def _group_end(sts: list[Statement], begin: int) -> int | None:
    return next((k for k in range(begin + 1, len(sts)) if sql.control(sts[k]) == "commit"), None)


def _without_group(begin: int):
    def apply(sts, marker):
        end = _group_end(sts, begin)
        return [st for k, st in enumerate(sts) if k not in (begin, end)], marker

    return apply


def _move_after_group(k: int, begin: int):
    def apply(sts, marker):
        end = _group_end(sts, begin)
        if end is None:
            return sts, marker  # nothing to move it after: not offered (the BEGIN without a COMMIT is named)
        moved = sts[k]
        rest = sts[:k] + sts[k + 1 :]
        return rest[:end] + [moved] + rest[end:], marker

    return apply


def wrapper_lines(sts: list[Statement]) -> tuple[int, int] | None:
    """The lines of a file's own BEGIN and COMMIT when it is wrapped whole in them."""
    return (sts[0].line, sts[-1].line) if _wrapped(sts) else None
