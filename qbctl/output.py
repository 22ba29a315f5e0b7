"""The one place that writes to the terminal: rich for people, one JSON object for programs.

With --json, NO_COLOR or no terminal, nothing decorative goes to stdout. Progress goes
to stderr. Every string passes through the secret mask before it is written.
"""
from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager

from qbctl.config.urls import mask_secrets


class Output:
    def __init__(self) -> None:
        self.json = False
        self.secrets: list[str] = []
        self._console = None
        self._err = None

    @property
    def plain(self) -> bool:
        return self.json or bool(os.environ.get("NO_COLOR")) or not sys.stdout.isatty()

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            # Off a terminal nothing is cut to 80 columns: logs and scripts get whole values.
            width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS") or 200)
            self._console = Console(highlight=False, no_color=self.plain, soft_wrap=False, width=width)
        return self._console

    @property
    def err(self):
        if self._err is None:
            from rich.console import Console

            # soft_wrap: an error stays one line however narrow the terminal or log.
            self._err = Console(stderr=True, highlight=False, soft_wrap=True,
                                no_color=bool(os.environ.get("NO_COLOR")))
        return self._err

    def mask(self, text: str) -> str:
        return mask_secrets(text, self.secrets)

    def emit_json(self, data: dict) -> None:
        sys.stdout.write(self.mask(json.dumps(data, default=str)) + "\n")
        sys.stdout.flush()

    def print(self, renderable="", **kw) -> None:
        if isinstance(renderable, str):
            renderable = self.mask(renderable)
        self.console.print(renderable, **kw)

    def line(self, text: str = "") -> None:
        """A plain line on stdout, never interpreted as markup."""
        sys.stdout.write(self.mask(text) + "\n")

    def _stderr(self, text: str, style: str | None = None) -> None:
        """One line on stderr: through rich on a terminal, plain (and without loading rich) elsewhere."""
        if sys.stderr.isatty():
            self.err.print(self.mask(text), markup=False, highlight=False, style=style)
        else:
            sys.stderr.write(self.mask(text) + "\n")
            sys.stderr.flush()

    def note(self, text: str) -> None:
        """Progress or a remark on stderr; silent in --json mode."""
        if not self.json:
            self._stderr(text)

    def warn(self, text: str) -> None:
        self._stderr("warning: " + text, "yellow")

    def error(self, message: str, hint: str | None = None) -> None:
        for line in message.splitlines():
            self._stderr("error: " + line, "bold red")
        if hint:
            self._stderr("hint: " + hint)

    @contextmanager
    def status(self, text: str):
        """A spinner on a terminal; on anything else, nothing."""
        if self.json or not sys.stderr.isatty():
            yield _NoStatus()
            return
        with self.err.status(self.mask(text)) as st:
            yield st


    @contextmanager
    def progress_bar(self, text: str):
        """A progress bar on a terminal; yields advance(done, total). Silent elsewhere."""
        if self.json or not sys.stderr.isatty():
            yield lambda done, total: None
            return
        from rich.progress import Progress

        with Progress(console=self.err, transient=True) as bar:
            task = bar.add_task(text, total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)


class _NoStatus:
    def update(self, *_a, **_k):
        pass
