"""Command-line options built from a job's config dataclass (see :mod:`smp_diffusion_encoder._options`).

Each field declared with :func:`~smp_diffusion_encoder._options.option` becomes ``--field-name`` with the
field's help and its default appended; the parsed values come back as the config. Options not given on the
command line are left out of the namespace (``argparse.SUPPRESS``), so a caller can layer defaults, saved
settings (``--resume``) and what the user typed.

Types: ``bool`` -> ``--x/--no-x``; ``Literal[...]`` -> choices; ``X | None`` -> ``X`` or the word ``none``;
``tuple[X, ...]`` -> one or more values.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from typing import Any, Literal, get_args, get_origin

NONE_WORD = "none"


def add_config_arguments(
    parser: argparse.ArgumentParser, cls: type, *, exclude: tuple[str, ...] = (), defaults: dict[str, Any] | None = None
) -> None:
    """Add one option per CLI field of ``cls`` (minus ``exclude``); ``defaults`` overrides shown defaults."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True) or f.name in exclude or "help" not in meta:
            continue
        default = (defaults or {}).get(f.name, f.default)
        text = f"{meta['help']} (default: {_show(default)})".replace("%", "%%")  # argparse %-formats help
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
        kwargs.update(_kind(hints[f.name], meta))
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        parser.add_argument(meta.get("flag") or "--" + f.name.replace("_", "-"), **kwargs)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` the user set on the command line (as parsed values)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def _kind(hint: Any, meta: typing.Mapping[str, Any]) -> dict[str, Any]:
    nullable, hint = _strip_none(hint)
    if meta.get("type") is not None:
        return {"type": _maybe_none(meta["type"], nullable)}
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(hint) is Literal:
        choices = [str(c) for c in get_args(hint)] + ([NONE_WORD] if nullable else [])
        return {"choices": choices, "type": _maybe_none(str, nullable)}
    if get_origin(hint) is tuple:
        return {"nargs": "+", "type": get_args(hint)[0]}
    if hint in (int, float, str):
        return {"type": _maybe_none(hint, nullable)}
    return {"type": _maybe_none(str, nullable)}


def _strip_none(hint: Any) -> tuple[bool, Any]:
    if get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        nullable = len(args) < len(get_args(hint))
        if len(args) == 1:
            return nullable, args[0]
        literals = [a for a in args if get_origin(a) is Literal]
        return nullable, (literals[0] if literals else str)
    return False, hint


def _maybe_none(convert: Any, nullable: bool) -> Any:
    if not nullable:
        return convert

    def parse(text: str) -> Any:
        return None if text.lower() == NONE_WORD else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names the type in errors
    return parse


def _show(value: Any) -> str:
    if value is None:
        return NONE_WORD
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value) if value else "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def description(doc: str | None) -> str | None:
    """A subcommand's ``--help`` description from its module docstring: the text after the first paragraph,
    without reStructuredText markup (double backticks, ``:role:`` references)."""
    if not doc:
        return None
    parts = doc.split("\n\n", 1)
    text = parts[1] if len(parts) > 1 else parts[0]
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "").strip()
