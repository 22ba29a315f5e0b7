"""qbctl env check: the env file against qbctl's settings table and .env.example."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qbctl.config.settings import BY_KEY, PARSERS, mask_value, read_env_file, suggestion
from qbctl.errors import CheckFailed, ConfigError, QbctlError
from qbctl.result import Result


@dataclass
class EnvCheckResult(Result):
    env_file: str | None
    example: str | None
    unknown: list[dict] = field(default_factory=list)  # {"key", "did_you_mean"}
    defaults: int = 0  # settings not in the file: their defaults apply
    invalid: list[dict] = field(default_factory=list)
    ok: bool = True
    error: QbctlError | None = None


def check(env_file: Path | None, root: Path) -> EnvCheckResult:
    """Bad values, unknown keys (with the setting each was probably meant to be) in the env file
    (`env_file`, else the project folder's .env).

    No env file is no error: every default applies, as `qbctl up` in a fresh clone does.
    """
    path = env_file or root / ".env"
    example = root / ".env.example"
    expected = set(read_env_file(example)) if example.exists() else set()
    if not path.exists():
        if env_file:
            raise ConfigError(f"env file {path} does not exist", hint="create it (see .env.example) or drop --env-file")
        return EnvCheckResult(None, str(example) if example.exists() else None, defaults=len(BY_KEY))
    values = read_env_file(path)
    result = EnvCheckResult(str(path), str(example) if example.exists() else None)
    result.unknown = [
        {"key": k, "did_you_mean": suggestion(k)} for k in sorted(values) if k not in BY_KEY and k not in expected
    ]
    for u in result.unknown:
        if u["key"] == "QBCTL_PROJECT_DIR":
            u["note"] = "read from the environment only: it names this file's folder"
    result.defaults = sum(k not in values for k in BY_KEY)
    for key, raw in values.items():
        setting = BY_KEY.get(key)
        if setting is None:
            continue
        try:
            PARSERS[setting.kind](raw.strip())
        except ValueError as exc:
            result.invalid.append({"key": key, "value": mask_value(key, raw), "problem": str(exc)})
    if result.invalid:
        result.fail(
            ConfigError(
                f"{len(result.invalid)} bad value(s) in {path}",
                hint="fix them; .env.example shows each setting's form and default",
            )
        )
    elif result.unknown:
        result.fail(
            CheckFailed(
                f"{len(result.unknown)} key(s) in {path} that neither qbctl nor .env.example "
                "knows: " + ", ".join(u["key"] for u in result.unknown),
                code="UNKNOWN_KEYS",
                hint="a typo? Otherwise add them to .env.example",
            )
        )
    return result
