"""qbctl env check: .env against .env.example and qbctl's settings table."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qbctl.result import Result
from qbctl.errors import ConfigError, Exit
from qbctl.config.settings import BY_KEY, PARSERS, mask_value, read_env_file


@dataclass
class EnvCheckResult(Result):
    env_file: str | None
    example: str | None
    unknown: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    invalid: list[dict] = field(default_factory=list)
    ok: bool = True
    error: dict | None = None
    exit_code: int = 0



def check(env_file: Path | None, root: Path, cwd: Path) -> EnvCheckResult:
    path = env_file or cwd / ".env"
    example = root / ".env.example"
    if not path.exists():
        raise ConfigError(f"no env file at {path}", hint="copy .env.example to .env, or pass --env-file")
    values = read_env_file(path)
    expected = set(read_env_file(example)) if example.exists() else set()
    result = EnvCheckResult(str(path), str(example) if example.exists() else None)
    result.unknown = sorted(k for k in values if k not in BY_KEY and k not in expected)
    result.missing = sorted(k for k in (expected | set(BY_KEY)) if k not in values and k in expected)
    for key, raw in values.items():
        setting = BY_KEY.get(key)
        if setting is None:
            continue
        try:
            PARSERS[setting.kind](raw.strip())
        except ValueError as exc:
            result.invalid.append({"key": key, "value": mask_value(key, raw), "problem": str(exc)})
    if result.invalid:
        result.ok, result.exit_code = False, int(Exit.USAGE)
        result.error = {"code": "CONFIG_INVALID", "message": f"{len(result.invalid)} bad value(s) in {path}",
                        "hint": "fix them; .env.example shows each setting's form and default"}
    elif result.unknown:
        result.ok, result.exit_code = False, int(Exit.CHECK_FAILED)
        result.error = {"code": "UNKNOWN_KEYS", "message": f"{len(result.unknown)} key(s) in {path} that neither "
                        "qbctl nor .env.example knows: " + ", ".join(result.unknown),
                        "hint": "a typo? Otherwise add them to .env.example"}
    return result
