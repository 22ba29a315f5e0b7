"""SQL text split into statements, as psql splits a file, and what each statement needs.

`split` reads the tokens of PostgreSQL's own lexer (pglast, the server's scanner as a library:
quotes, E'' strings with backslashes, U&'' and B''/X'' strings, "quoted identifiers", dollar quotes,
nested /* */ comments, -- comments), and ends a statement where psql does: at a semicolon outside
parentheses and outside the BEGIN ... END of a SQL-standard function body (CREATE FUNCTION ...
BEGIN ATOMIC), found with psql's own heuristic, which the server's lexer does not have. Each
statement keeps the line it starts on (for errors), a canonical form (comments dropped, blanks
collapsed: its checksum survives cosmetic edits) and a code form (string contents blanked, upper
case) that `classify` reads.

Why the lexer and not the parser: a file with a syntax error, or with syntax newer than the
parser's, must still split, so that the server reports its own error at the statement's line;
psql does not parse either. The canonical form is byte for byte the one of qbctl's earlier
hand-written splitter (tests/unit/statement_checksums.json), since a partly applied file records
its committed statements' checksums.

Pure: no database, no I/O. pglast is imported when a file is first split: never on the no-op
migrate, which splits nothing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_COMMENTS = frozenset(("SQL_COMMENT", "C_COMMENT"))
_STRINGS = frozenset(("SCONST", "USCONST", "BCONST", "XCONST"))
# A string continued over a line break ('a'\n'b' is 'ab' to the server) is one token of the lexer;
# the canonical form has always shown its pieces apart, as 'a' 'b'.
_PIECE = re.compile(r"(?:[eE]'(?:[^'\\]|\\.|'')*'|(?:[uU]&|[bBxXnN])?'[^']*(?:''[^']*)*')")
_GAP = re.compile(r"(?:\s|--[^\n]*)+")
_BEGIN_WORDS = ("create", "function", "procedure", "or", "replace")


@dataclass(frozen=True)
class Statement:
    text: str  # from its first token to its end, without the semicolon
    line: int  # the line its first token is on (1-based)
    canonical: str  # comments dropped, runs of blanks outside quotes as one space
    code: str  # canonical with the contents of strings blanked, upper case: what classify reads

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.canonical.encode()).hexdigest()[:16]


def tokens(text: str) -> list[tuple[int, int, str]]:
    """(start, end, name) of each token of PostgreSQL's lexer, comments included; end exclusive.

    What the lexer cannot finish (an unterminated quote or comment: the server says so) runs to
    the end of the text, as psql reads it.
    """
    from pglast.parser import ParseError, scan

    end, error = len(text), None
    while True:
        try:
            found = scan(text[:end])
            break
        except ParseError as exc:
            # Where the lexer stopped: the text before it scans, unless the error lies inside a
            # token (an invalid escape in a string), whose start the shorter text then names.
            at = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
            end, error = min(at, end - 1) if end else 0, str(exc.args[0])
    out = [(t.start, t.end + 1, t.name) for t in found]
    if error is not None:
        out.append((end, len(text), "C_COMMENT" if "comment" in error else "UNREAD"))
    return out


def split(text: str) -> list[Statement]:
    """The statements of `text` in order; empty statements (a lone `;`) are dropped."""
    out: list[Statement] = []
    start = None  # offset of the current statement's first token
    canon: list[str] = []
    code: list[str] = []
    last_end = 0
    paren = begin_depth = 0
    idents: list[str] = []  # psql's CREATE [OR REPLACE] FUNCTION|PROCEDURE detector
    line, counted = 1, 0  # line number at offset `counted`: counted forward, once

    def finish(end: int) -> None:
        nonlocal start, canon, code, paren, begin_depth, idents, line, counted
        if start is not None:
            line, counted = line + text.count("\n", counted, start), start
            out.append(Statement(text[start:end].rstrip(), line, "".join(canon).strip(), "".join(code).strip().upper()))
        start, canon, code, paren, begin_depth, idents = None, [], [], 0, 0, []

    for begin, end, name in tokens(text):
        if name in _COMMENTS:
            continue
        tok = text[begin:end]
        if tok == ";" and paren == 0 and begin_depth == 0:
            finish(begin)
            last_end = end
            continue
        if start is None:
            start = begin
        elif begin > last_end:  # blanks or a comment since the last token
            canon.append(" ")
            code.append(" ")
        last_end = end
        if name in _STRINGS or name == "UNREAD":
            pieces = _pieces(tok) if name in _STRINGS else [tok]
            canon.append(" ".join(pieces))
            code.append(" ".join("''" for _ in pieces))
            continue
        canon.append(tok)
        code.append(tok)
        if tok == "(":
            paren += 1
        elif tok == ")":
            paren = max(0, paren - 1)
        elif tok[0].isalpha() or tok[0] == "_":  # a word: a keyword or an unquoted identifier
            begin_depth = _track_begin(tok.lower(), idents, paren, begin_depth)
    finish(len(text))
    return [s for s in out if s.canonical]


def _pieces(tok: str) -> list[str]:
    """A string token as the pieces it was written in ('a'\n'b' -> ["'a'", "'b'"])."""
    if "\n" not in tok or tok.startswith("$"):
        return [tok]
    pieces, i = [], 0
    while True:
        m = _PIECE.match(tok, i)
        if not m:
            return [tok]
        pieces.append(m.group())
        if m.end() == len(tok):
            return pieces
        gap = _GAP.match(tok, m.end())
        if not gap or "\n" not in gap.group():  # a quote inside the string, not a continuation
            return [tok]
        i = gap.end()


def _track_begin(word: str, idents: list[str], paren: int, depth: int) -> int:
    """psql's heuristic: inside CREATE [OR REPLACE] FUNCTION|PROCEDURE, BEGIN ... END (and CASE ... END
    within it) nest, and a semicolon inside does not end the statement."""
    if len(idents) < 4:
        idents.append(word[0] if word in _BEGIN_WORDS else "")
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
    (
        re.compile(r"^CREATE\s+(?:UNIQUE\s+)?INDEX\b.*\bTIMESCALEDB\s*\.\s*TRANSACTION_PER_CHUNK\b", re.S),
        "CREATE INDEX ... WITH (timescaledb.transaction_per_chunk)",
    ),
    (
        re.compile(r"^CALL\s+(?:(?:PUBLIC|\"PUBLIC\")\s*\.\s*)?REFRESH_CONTINUOUS_AGGREGATE\b"),
        "CALL refresh_continuous_aggregate",
    ),
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
    if not m or m.lastindex is None:
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


_MAY_COMMIT = re.compile(r"^(?:CALL|DO)\b")


def may_commit(st: Statement) -> bool:
    """A CALL or DO, whose procedure or block may COMMIT itself: only outside a transaction block (PG 11+)."""
    return bool(_MAY_COMMIT.match(st.code))
