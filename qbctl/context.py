"""What the root callback hands every command: global options, settings built once, the output."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qbctl.output import Output


@dataclass
class AppState:
    env_file: Path | None = None
    project: str | None = None
    verbose: bool = False
    out: Output = field(default_factory=Output)
    _settings: object = None

    @property
    def settings(self):
        """The resolved settings, built on first use (so --help and env check need no valid .env)."""
        if self._settings is None:
            from qbctl.config import settings

            self._settings = settings.load(self.env_file, project=self.project)
            self.out.secrets = self._settings.secrets()
        return self._settings
