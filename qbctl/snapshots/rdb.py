"""The key counts an RDB file itself records (RESIZEDB, per database), read without loading it.

They are the dataset at the moment Redis forked to write the file, so a snapshot's key counts
agree with its file even while the backend writes, and a restore is checked against them.
"""

from __future__ import annotations

from pathlib import Path

AUX, RESIZEDB, SELECTDB, EOF = 0xFA, 0xFB, 0xFE, 0xFF


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def byte(self) -> int:
        b = self.data[self.at]
        self.at += 1
        return b

    def skip(self, n: int) -> None:
        if self.at + n > len(self.data):
            raise ValueError("cut short")
        self.at += n

    def length(self) -> tuple[int, bool]:
        """(value, encoded): RDB's length encoding; encoded means a special string format follows."""
        b = self.byte()
        kind = b >> 6
        if kind == 0:
            return b & 0x3F, False
        if kind == 1:
            return ((b & 0x3F) << 8) | self.byte(), False
        if kind == 2:
            if b == 0x80:
                n = int.from_bytes(self.data[self.at : self.at + 4], "big")
                self.skip(4)
                return n, False
            if b == 0x81:
                n = int.from_bytes(self.data[self.at : self.at + 8], "big")
                self.skip(8)
                return n, False
            raise ValueError(f"unknown length byte {b:#x}")
        return b & 0x3F, True

    def string(self) -> None:
        n, encoded = self.length()
        if not encoded:
            self.skip(n)
        elif n in (0, 1, 2):  # an integer of 1, 2 or 4 bytes
            self.skip(1 << n)
        elif n == 3:  # LZF: compressed length, plain length, data
            clen, _ = self.length()
            self.length()
            self.skip(clen)
        else:
            raise ValueError(f"unknown string encoding {n}")


def key_counts(path: Path, limit: int = 1 << 20) -> dict[str, int] | None:
    """{"db0": keys} of the file's first database (RESIZEDB); None when the file does not say.

    Only the first: the next database's record lies behind every key of this one, which would
    have to be parsed value by value. The stack keeps all its keys in one database as a rule."""
    with open(path, "rb") as f:
        head = f.read(limit)
    if not head.startswith(b"REDIS"):
        return None
    r = _Reader(head)
    r.skip(9)
    db = None
    try:
        while True:
            op = r.byte()
            if op == AUX:
                r.string()
                r.string()
            elif op == SELECTDB:
                db, _ = r.length()
            elif op == RESIZEDB and db is not None:
                keys, _ = r.length()
                return {f"db{db}": keys}
            elif op == EOF:
                return {}
            else:
                return None
    except (IndexError, ValueError):
        return None
