"""What the root callback hands every command: global options, settings built once, the output, the runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from qbctl.output import Output

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime


@dataclass
class AppState:
    env_file: Path | None = None
    project: str | None = None
    project_dir: Path | None = None
    verbose: bool = False
    out: Output = field(default_factory=Output)
    on_interrupt: str = ""  # what a command says when Ctrl-C stops it
    command: str = ""  # the command being run ("db status"), for messages about it
    _settings: object = None
    _rt: Runtime | None = None

    @property
    def rt(self) -> Runtime:
        """The command's Runtime (qbctl.engine.runtime): the engine, opened on first use, and what `close` ends.
        Built on first use, so that a command that never needs the engine imports none of it."""
        if self._rt is None:
            from qbctl.engine.runtime import Runtime

            self._rt = Runtime()
        return self._rt

    def close(self) -> None:
        """End what the command opened (the runtime's engine and ssh tunnels), whatever ended the command."""
        if self._rt is not None:
            self._rt.close()
            self._rt = None

    @property
    def settings(self):
        """The resolved settings, built on first use (so --help and env check need no valid .env).
        A key of the env file that looks like a misspelt setting is warned about here, once."""
        if self._settings is None:
            from qbctl.config import settings

            self._settings = settings.load(self.env_file, project=self.project, project_dir=self.project_dir)
            self.out.secrets = self._settings.secrets()
            for warning in self.settings_warnings():
                self.out.warn(warning)
        return self._settings

    def settings_warnings(self) -> list[str]:
        """What reading the env file warns about: keys that look like a misspelt setting, or are read elsewhere."""
        s = self._settings
        said: list[str] = []
        if s is None:
            return said
        env_file = getattr(s, "env_file", None)
        for key, near in (getattr(s, "typos", None) or {}).items():
            if not near:
                said.append(
                    f"{env_file}: {key} is ignored there: it is read from the environment only (or use --project-dir)"
                )
            else:
                said.append(f"{env_file}: unknown key {key}, ignored; did you mean {near}?")
        return said

    def read_settings(self):
        """The settings of a command that only reads: outside a project it says which project it reads."""
        s = self.settings
        if not s.is_project:
            self.out.note(f"note: reading project {s.project}: {s.project_source}")
        return s

    def interrupted_message(self) -> str:
        return "interrupted" + (f": {self.on_interrupt}" if self.on_interrupt else "")
