"""Typed job configurations: frozen keyword-only dataclasses loaded from TOML.

A job config is a frozen ``@dataclass(frozen=True, kw_only=True)`` subclass of
:class:`JobConfig`, registered under the name a TOML file gives in its ``job`` key.
Loading checks everything before a job launches and reports *every* problem in one
:class:`~raymeta.errors.ConfigError`: unknown keys (with the closest valid key),
missing required keys, wrong types, and the class's own cross-field checks
(:meth:`JobConfig.problems`).

Example:
    >>> from dataclasses import dataclass
    >>> @register_job_config("toy")
    ... @dataclass(frozen=True, kw_only=True)
    ... class ToyConfig(JobConfig):
    ...     steps: int = 10
    >>> parse_config({"job": "toy", "steps": 3})
    ToyConfig(job='toy', seed=0, steps=3)
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from raymeta.errors import ConfigError

__all__ = [
    "JobConfig",
    "job_names",
    "load_config",
    "parse_config",
    "parse_section",
    "register_job_config",
]

_REGISTRY: dict[str, type[JobConfig]] = {}
C = TypeVar("C")


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobConfig:
    """Base of every job config.

    Attributes:
        job: The registered job name (the TOML ``job`` key).
        seed: Base seed; every generator in the job derives from it.
    """

    job: str = ""
    seed: int = 0

    def problems(self) -> list[str]:
        """Cross-field checks; return a list of human-readable problems (empty = ok)."""
        return []


def register_job_config(name: str) -> Callable[[type[C]], type[C]]:
    """Register a :class:`JobConfig` subclass under ``name`` (the TOML ``job`` key)."""

    def decorate(cls: type[C]) -> type[C]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConfigError(f"job name {name!r} is registered twice")
        _REGISTRY[name] = cls  # type: ignore[assignment]
        return cls

    return decorate


def job_names() -> list[str]:
    """Names of all registered jobs."""
    return sorted(_REGISTRY)


def load_config(path: str | Path) -> JobConfig:
    """Read a TOML job config and validate it completely.

    Args:
        path: A ``.toml`` file with a top-level ``job = "<name>"`` key.

    Returns:
        The frozen, validated config object.

    Raises:
        ConfigError: The file is missing or unreadable, or any key/value is wrong;
            the message lists every problem.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    return parse_config(data, source=str(path))


def parse_config(data: Mapping[str, Any], *, source: str = "config") -> JobConfig:
    """Validate a mapping (e.g. parsed TOML) into the registered config class.

    Raises:
        ConfigError: Lists every problem found, prefixed with ``source``.
    """
    name = data.get("job")
    if name not in _REGISTRY:
        raise ConfigError(
            f"{source}: 'job' must be one of {sorted(_REGISTRY)}; got {name!r}"
        )
    return parse_section(_REGISTRY[name], data, source=source)


def parse_section(cls: type[C], data: Mapping[str, Any], *, source: str) -> C:
    """Validate ``data`` against the dataclass ``cls``, collecting every problem."""
    problems: list[str] = []
    value = _build(cls, data, "", problems)
    if not problems and isinstance(value, JobConfig):
        problems.extend(value.problems())
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{source}: {len(problems)} problem(s):\n{listing}")
    return value  # type: ignore[return-value]


def _build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    if not isinstance(data, Mapping):
        problems.append(f"{prefix or 'config'}: expected a table, got {data!r}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    known_problems = len(problems)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                f"{prefix}{key}: unknown key{hint} (valid keys: {sorted(fields)})"
            )
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        path = f"{prefix}{name}"
        if name not in data:
            no_default = field.default is dataclasses.MISSING
            if no_default and field.default_factory is dataclasses.MISSING:
                problems.append(f"{path}: required key is missing")
            continue
        kwargs[name] = _convert(hints[name], data[name], path, problems)
    if len(problems) > known_problems:
        return None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        problems.append(f"{prefix or 'config'}: {err}")
        return None


def _convert(hint: Any, value: Any, path: str, problems: list[str]) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{path}.", problems)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[str] = []
            converted = _convert(arg, value, path, trial)
            if not trial:
                return converted
        problems.append(f"{path}: expected {_name(hint)}, got {value!r}")
        return None
    if origin is Literal:
        if value not in args:
            problems.append(f"{path}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            problems.append(f"{path}: expected a list, got {value!r}")
            return None
        item = args[0] if args else Any
        items = [
            _convert(item, v, f"{path}[{i}]", problems) for i, v in enumerate(value)
        ]
        return tuple(items) if origin is tuple else items
    return _convert_scalar(hint, value, path, problems)


def _convert_scalar(hint: Any, value: Any, path: str, problems: list[str]) -> Any:
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        problems.append(f"{path}: expected {hint.__name__}, got boolean {value!r}")
        return value
    if isinstance(hint, type) and not isinstance(value, hint):
        problems.append(f"{path}: expected {_name(hint)}, got {value!r}")
    return value


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


# --------------------------------------------------------------------------------------
# Built-in job configs. Each method adds its config class below, registered under the
# name its TOML files give in ``job``. Config keys equal the library's argument names.
# --------------------------------------------------------------------------------------
