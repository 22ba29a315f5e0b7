"""The one place that writes to the terminal: rich for people, plain text for logs, JSON for programs.

- stdout carries the result: a table or lines, or with --json exactly one JSON object.
- stderr carries progress, warnings and errors.
- On a terminal (and without NO_COLOR) rich draws tables and a live progress line; anywhere
  else the text is plain: no escape codes, no padding at line ends, nothing cut.
- Every string, table cell included, passes through the secret mask before it is written.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager

TYPE_CHECKING = False  # not typing's: a warm `up` shows its answer without importing typing (mypy reads this alike)

if TYPE_CHECKING:  # imported where used: every command pays for this module's imports
    from typing import Sequence, TextIO

    from rich.console import Console

    from qbctl.errors import QbctlError
    from qbctl.events import Event

LOGGED = ("waiting", "done", "failed", "info")  # events kept as lines (events.Status); "working" is live only


class Output:
    def __init__(
        self,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        environ: dict | None = None,
        width: int | None = None,
    ) -> None:
        self.json = False
        self.secrets: list[str] = []
        self._stdout, self._stderr = stdout, stderr
        self._environ = os.environ if environ is None else environ
        self._width = width  # the terminal's width; None: ask the terminal (rich does)
        self._console: Console | None = None
        self._err: Console | None = None

    # --- where and how ---------------------------------------------------------------------------
    @property
    def stdout(self) -> TextIO:
        return self._stdout or sys.stdout

    @property
    def stderr(self) -> TextIO:
        return self._stderr or sys.stderr

    @property
    def no_color(self) -> bool:
        return bool(self._environ.get("NO_COLOR"))

    @property
    def rich(self) -> bool:
        """Whether stdout gets rich tables: a terminal, no NO_COLOR, no --json."""
        return not self.json and not self.no_color and _isatty(self.stdout)

    @property
    def interactive(self) -> bool:
        """Whether a person is at a terminal on both ends (psql gets a tty then)."""
        return _isatty(sys.stdin) and _isatty(self.stdout)

    @property
    def live(self) -> bool:
        """Whether stderr gets a live progress line."""
        return not self.json and _isatty(self.stderr)

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stdout, highlight=False, soft_wrap=False, width=self._width)
        return self._console

    @property
    def err(self) -> Console:
        if self._err is None:
            from rich.console import Console

            # soft_wrap: an error stays one line however narrow the terminal.
            self._err = Console(file=self.stderr, highlight=False, soft_wrap=True, no_color=self.no_color)
        return self._err

    def mask(self, text: str) -> str:
        return mask_secrets(text, self.secrets)

    # --- stdout --------------------------------------------------------------------------------------
    def emit_json(self, data: dict) -> None:
        self.stdout.write(self.mask(json.dumps(data, default=str)) + "\n")
        self.stdout.flush()

    def line(self, text: str = "") -> None:
        """A plain line on stdout, never interpreted as markup."""
        self.stdout.write(self.mask(text).rstrip() + "\n")

    def para(self, text: str, indent: str = "", hang: str = "    ") -> None:
        """A long line: wrapped between words to the terminal's width (continuation lines indented by
        `hang`); one line anywhere else, so that logs and grep see it whole. A word longer than the
        line (a URL) is kept whole: the terminal wraps it, nothing cuts it."""
        if not self.rich:
            self.line(indent + text)
            return
        import textwrap

        self.stdout.write(
            textwrap.fill(
                self.mask(text),
                width=max(40, self.console.width - 1),
                initial_indent=indent,
                subsequent_indent=indent + hang,
                break_on_hyphens=False,
                break_long_words=False,
            )
            + "\n"
        )

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """A table on stdout. Nothing a user needs is cut: when the columns do not fit the
        terminal, each row is shown as `column: value` lines instead."""
        rows = [[self.mask(str(c)) for c in r] for r in rows]
        if not self.rich:
            self.stdout.write(plain_table(columns, rows))
            return
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
        if sum(widths) + 3 * (len(columns) - 1) > self.console.width:  # 3: padding, divider, padding
            self.stdout.write(key_value_blocks(columns, rows, self.console.width))
            return
        from rich import box
        from rich.table import Table

        t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)  # no blank first and last lines
        for c in columns:
            t.add_column(c, no_wrap=True, overflow="fold")
        for r in rows:
            t.add_row(*r)
        self.console.print(t)

    # --- stderr --------------------------------------------------------------------------------------
    def _stderr_line(self, text: str, style: str | None = None) -> None:
        if _isatty(self.stderr) and not self.no_color:
            self.err.print(self.mask(text), markup=False, highlight=False, style=style)
        else:
            self.stderr.write(self.mask(text) + "\n")
            self.stderr.flush()

    def note(self, text: str) -> None:
        """A remark on stderr; silent under --json."""
        if not self.json:
            self._stderr_line(text)

    def warn(self, text: str) -> None:
        self._stderr_line("warning: " + text, "yellow")

    def error(self, err: QbctlError) -> None:
        """An error as an `error: ...` line (what the server added, such as DETAIL and CONTEXT, on
        indented lines below it) and a `hint: ...` on stderr."""
        for n, line in enumerate(err.message.splitlines() or [""]):
            self._stderr_line(("  " if n else "error: ") + line, None if n else "bold red")
        if err.hint:
            self._stderr_line("hint: " + err.hint)

    def fail(self, err: QbctlError) -> int:
        """A command that ends in an error and has no result to show: the error alone."""
        if self.json:
            self.emit_json({"ok": False, "error": err.to_dict()})
        else:
            self.error(err)
        return int(err.exit_code)

    # --- progress --------------------------------------------------------------------------------
    @contextmanager
    def progress(self, title: str):
        """An events listener for the command's run: see events.py for what each status shows."""
        if not self.live:
            yield self._log_event
            return
        from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn

        class Bar(BarColumn):
            def render(self, task):
                from rich.text import Text

                return super().render(task) if task.total else Text("")

        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), Bar(bar_width=30), console=self.err, transient=True
        ) as bar:
            tasks: dict[str, TaskID] = {}
            title_task = [bar.add_task(self.mask(title), total=None)]

            def show(event: Event) -> None:
                self._log_event(event)
                if title_task:  # the first event replaces the title with a line per service
                    bar.remove_task(title_task.pop())
                if event.service not in tasks:
                    tasks[event.service] = bar.add_task("", total=None)
                bar.update(
                    tasks[event.service],
                    description=self.mask(event.line()),
                    total=event.total,
                    completed=event.done or 0,
                )

            yield show

    def _log_event(self, event: Event) -> None:
        if event.status == "warning":
            self.warn(event.line())
        elif event.status in LOGGED and not self.json:
            self._stderr_line(event.line())
        elif event.status == "pulling" and event.done is None and not self.json:
            self._stderr_line(event.line())


def mask_secrets(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of a secret (and its URL-quoted form) by ***."""
    if secrets:
        from urllib.parse import quote
    for s in secrets:
        if s and len(s) >= 3:
            text = text.replace(s, "***").replace(quote(s, safe=""), "***")
    return text


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def plain_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns separated by two spaces, no escapes, no trailing blanks; a rule under the header."""
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]

    def fmt(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() + "\n"

    return fmt(columns) + fmt(["-" * w for w in widths]) + "".join(fmt(r) for r in rows)


def key_value_blocks(columns: Sequence[str], rows: Sequence[Sequence[str]], width: int | None = None) -> str:
    """A narrow terminal's table: one block per row, `column: value` per line; a value longer than the
    terminal is wrapped between its words under itself (a word, a URL, is never broken)."""
    import textwrap

    label = max(len(c) for c in columns)
    room = (width or 10**6) - label - 2
    blocks = []
    for r in rows:
        lines = []
        for c, v in zip(columns, r, strict=True):
            if not v:
                continue
            parts = textwrap.wrap(v, width=max(20, room), break_long_words=False, break_on_hyphens=False) or [v]
            lines.append(f"{c.rjust(label)}: {parts[0]}\n" + "".join(" " * (label + 2) + p + "\n" for p in parts[1:]))
        blocks.append("".join(lines))
    return "\n".join(blocks)
