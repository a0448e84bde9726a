"""Job settings as frozen dataclasses: one source of truth for names, defaults, help and JSON (no torch).

A job's config (:class:`~smp_diffusion_encoder.training.config.PretrainConfig`, ``FinetuneConfig``,
``SampleConfig``, ``StudyConfig``) declares each setting with :func:`option`: its default and one line of
help. The command line is built from those fields (:mod:`smp_diffusion_encoder.cli._args`), the library
takes the same object, and :func:`to_dict` writes it into the run folder, so names, defaults and help
cannot drift apart.

Example:
    >>> @dataclasses.dataclass(frozen=True)
    ... class Job:
    ...     steps: int = option(100, "optimizer steps")
    >>> to_dict(Job()), from_dict(Job, {"steps": 5})
    ({'steps': 100}, Job(steps=5))
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from smp_diffusion_encoder.errors import ConfigError

C = TypeVar("C")


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    metavar: str | None = None,
    type: Any = None,
    cli: bool = True,
    fixed: bool = False,
) -> Any:
    """A config field with command-line metadata.

    Args:
        default: the default (a list/dict/set is not allowed: use a tuple).
        help: one line of help; the CLI appends the default.
        flag: the option's name (default ``--field-name``).
        metavar, type: argparse overrides (``type`` converts the command-line string).
        cli: ``False`` keeps the field out of the command line.
        fixed: a setting a resumed run must keep (checked on resume).
    """
    if isinstance(default, (list, dict, set)):
        raise TypeError("use an immutable default (tuple) for config options")
    return dataclasses.field(
        default=default,
        metadata={"help": help, "flag": flag, "metavar": metavar, "type": type, "cli": cli, "fixed": fixed},
    )


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config: tuples become lists, nested configs their own ``to_dict()``."""
    out = {}
    for f in dataclasses.fields(config):
        out[f.name] = _plain(getattr(config, f.name))
    return out


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def from_dict(cls: type[C], data: dict[str, Any], *, source: str = "config") -> C:
    """Build ``cls`` from a dict; unknown keys and invalid values raise :class:`ConfigError` naming ``source``."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown settings {unknown}; known: {sorted(known)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{source}: {err}") from err


def fixed_fields(cls: type) -> tuple[str, ...]:
    """Names of the settings declared ``fixed`` (a resumed run must keep them)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("fixed"))


def differences(saved: dict[str, Any], config: Any, names: tuple[str, ...]) -> list[str]:
    """``["name: saved X, now Y", ...]`` over ``names``; a name absent from ``saved`` counts as its default."""
    now = to_dict(config)
    defaults = {f.name: _plain(f.default) for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    return [
        f"{name}: saved {saved.get(name, defaults.get(name))!r}, now {now[name]!r}"
        for name in names
        if saved.get(name, defaults.get(name)) != now[name]
    ]
