"""SQL text split into statements, as psql splits a file, and what each statement needs.

`split` follows psql's lexer where it matters for finding the end of a statement: quotes
('', E'' with backslashes, ""), dollar quotes ($$, $tag$), nested /* */ comments, -- comments,
parentheses, and the BEGIN ... END of a SQL-standard function body (CREATE FUNCTION ... BEGIN
ATOMIC), with psql's own heuristic. Each statement keeps the line it starts on (for errors),
a canonical form (comments dropped, blanks collapsed: its checksum survives cosmetic edits)
and a code form (string contents blanked, upper case) that `classify` reads.

Pure: no database, no I/O.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<line_comment>--[^\n]*)
  | (?P<block_comment>/\*)
  | (?P<estring>[eE]'(?:[^'\\]|\\.|'')*'?)
  | (?P<string>'[^']*(?:''[^']*)*'?)
  | (?P<qident>"[^"]*(?:""[^"]*)*"?)
  | (?P<dollar>\$(?:[^\W\d]\w*)?\$)
  | (?P<ident>[^\W\d]\w*(?:\$\w*)*)
  | (?P<number>\d[\w.]*)
  | (?P<param>\$\d+)
  | (?P<other>.)
""", re.X | re.S)


@dataclass(frozen=True)
class Statement:
    text: str  # from its first token to its end, without the semicolon
    line: int  # the line its first token is on (1-based)
    canonical: str  # comments dropped, runs of blanks outside quotes as one space
    code: str  # canonical with the contents of strings blanked, upper case: what classify reads

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.canonical.encode()).hexdigest()[:16]


def split(text: str) -> list[Statement]:
    """The statements of `text` in order; empty statements (a lone `;`) are dropped."""
    out: list[Statement] = []
    n = len(text)
    i = 0
    start = None  # offset of the current statement's first token
    canon: list[str] = []
    code: list[str] = []
    gap = False  # blanks or a comment since the last token
    paren = begin_depth = 0
    idents: list[str] = []  # psql's CREATE [OR REPLACE] FUNCTION|PROCEDURE detector
    line, counted = 1, 0  # line number at offset `counted`: counted forward, once

    def finish(end: int) -> None:
        nonlocal start, canon, code, gap, paren, begin_depth, idents, line, counted
        if start is not None:
            line, counted = line + text.count("\n", counted, start), start
            out.append(Statement(text[start:end].rstrip(), line, "".join(canon).strip(),
                                 "".join(code).strip().upper()))
        start, canon, code, gap, paren, begin_depth, idents = None, [], [], False, 0, 0, []

    while i < n:
        m = _TOKEN.match(text, i)
        kind, tok = m.lastgroup, m.group()
        if kind == "space" or kind == "line_comment":
            gap, i = True, m.end()
            continue
        if kind == "block_comment":
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            gap, i = True, j
            continue
        if kind == "dollar":
            close = text.find(tok, m.end())
            end = n if close < 0 else close + len(tok)
            tok = text[i:end]
        if tok == ";" and paren == 0 and begin_depth == 0:
            finish(i)
            i += 1
            continue
        if start is None:
            start = i
        elif gap:
            canon.append(" ")
            code.append(" ")
        gap = False
        canon.append(tok)
        if kind in ("string", "estring", "dollar"):
            code.append("''")
        else:
            code.append(tok)
        if tok == "(":
            paren += 1
        elif tok == ")":
            paren = max(0, paren - 1)
        elif kind == "ident":
            begin_depth = _track_begin(tok.lower(), idents, paren, begin_depth)
        i += len(tok)
    finish(n)
    return [s for s in out if s.canonical]


def _track_begin(word: str, idents: list[str], paren: int, depth: int) -> int:
    """psql's heuristic: inside CREATE [OR REPLACE] FUNCTION|PROCEDURE, BEGIN ... END (and CASE ... END
    within it) nest, and a semicolon inside does not end the statement."""
    if len(idents) < 4:
        idents.append(word[0] if word in ("create", "function", "procedure", "or", "replace") else "")
    head = "".join(x or "_" for x in idents[:4])
    if paren == 0 and (head.startswith(("cf", "cp")) or head.startswith(("corf", "corp"))):
        if word == "begin":
            return depth + 1
        if word == "case" and depth >= 1:
            return depth + 1
        if word == "end" and depth > 0:
            return depth - 1
    return depth


# --- what a statement needs ------------------------------------------------------------------------
_CONTROL = re.compile(r"^(?:(BEGIN|START\s+TRANSACTION)|(COMMIT|END)|(ROLLBACK|ABORT)|(PREPARE\s+TRANSACTION))\b")
_NOT_CONTROL = re.compile(r"^(?:COMMIT\s+PREPARED|ROLLBACK\s+PREPARED|ROLLBACK(?:\s+(?:WORK|TRANSACTION))?\s+TO)\b")
_OUTSIDE = (  # (pattern on the code form, what to call it): statements the server refuses in a transaction block
    (re.compile(r"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\b"), "CREATE INDEX CONCURRENTLY"),
    (re.compile(r"^DROP\s+INDEX\s+CONCURRENTLY\b"), "DROP INDEX CONCURRENTLY"),
    (re.compile(r"^REINDEX\b.*\bCONCURRENTLY\b", re.S), "REINDEX CONCURRENTLY"),
    (re.compile(r"^CREATE\s+(?:UNIQUE\s+)?INDEX\b.*\bTIMESCALEDB\s*\.\s*TRANSACTION_PER_CHUNK\b", re.S),
     "CREATE INDEX ... WITH (timescaledb.transaction_per_chunk)"),
    (re.compile(r"^CALL\s+(?:(?:PUBLIC|\"PUBLIC\")\s*\.\s*)?REFRESH_CONTINUOUS_AGGREGATE\b"),
     "CALL refresh_continuous_aggregate"),
    (re.compile(r"^VACUUM\b"), "VACUUM"),
    (re.compile(r"^(?:CREATE|DROP)\s+DATABASE\b"), "CREATE/DROP DATABASE"),
    (re.compile(r"^(?:CREATE|DROP)\s+TABLESPACE\b"), "CREATE/DROP TABLESPACE"),
    (re.compile(r"^ALTER\s+SYSTEM\b"), "ALTER SYSTEM"),
    (re.compile(r"^(?:COMMIT|ROLLBACK)\s+PREPARED\b"), "COMMIT/ROLLBACK PREPARED"),
    (re.compile(r"^CLUSTER$"), "CLUSTER (all tables)"),
)
_CAGG = re.compile(r"^CREATE\s+MATERIALIZED\s+VIEW\b.*\bTIMESCALEDB\s*\.\s*CONTINUOUS\b", re.S)
_NO_DATA = re.compile(r"\bWITH\s+NO\s+DATA$")


def control(st: Statement) -> str | None:
    """'begin', 'commit', 'rollback' or 'prepare' for a top-level transaction control statement."""
    if _NOT_CONTROL.match(st.code):
        return None
    m = _CONTROL.match(st.code)
    if not m:
        return None
    return ("begin", "commit", "rollback", "prepare")[m.lastindex - 1]


def outside_transaction(st: Statement) -> str | None:
    """What the statement is, when PostgreSQL or TimescaleDB refuse it inside a transaction block."""
    for pattern, name in _OUTSIDE:
        if pattern.match(st.code):
            return name
    if _CAGG.match(st.code) and not _NO_DATA.search(st.code):
        return "CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous) WITH DATA"
    return None
