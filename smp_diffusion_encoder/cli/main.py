"""``smp-diffusion``: one entry point, one small module per subcommand.

Each subcommand module defines ``register(subparsers)`` (adds its parser and sets ``func``) and keeps its
logic in the library; this file only dispatches. Subcommand modules import only the standard library and
the torch-free config dataclasses at module level (their work imports the rest), so ``--help`` and argument
errors answer without importing torch. Any :class:`~smp_diffusion_encoder.errors.SmpDiffusionError`
becomes ``error: <message>`` on stderr and exit status 2, and so does an ``--out`` that cannot be written
(checked before the subcommand runs); nothing half-written is left behind because every
writer in the library writes atomically. Warnings print as one line each (``warning: <message>``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from smp_diffusion_encoder._io import check_writable
from smp_diffusion_encoder.errors import SmpDiffusionError, one_line_warning

#: Subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS: tuple[str, ...] = (
    "smp_diffusion_encoder.cli.demo",
    "smp_diffusion_encoder.cli.info",
    "smp_diffusion_encoder.cli.evaluate",
    "smp_diffusion_encoder.cli.check_data",
    "smp_diffusion_encoder.cli.phantom",
    "smp_diffusion_encoder.cli.prepare",
    "smp_diffusion_encoder.cli.split",
    "smp_diffusion_encoder.cli.push",
    "smp_diffusion_encoder.cli.pretrain",
    "smp_diffusion_encoder.cli.finetune",
    "smp_diffusion_encoder.cli.select_features",
    "smp_diffusion_encoder.cli.predict",
    "smp_diffusion_encoder.cli.suggest",
    "smp_diffusion_encoder.cli.sample",
    "smp_diffusion_encoder.cli.export",
    "smp_diffusion_encoder.cli.gen_metrics",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smp-diffusion",
        description="Diffusion-pretrained CT encoders for segmentation_models_pytorch and timm.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = one_line_warning  # no source echo: a user reads one line per warning
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if isinstance(getattr(args, "out", None), Path):  # an unwritable --out fails now, not after the work
            check_writable(args.out)
        result = args.func(args)
    except SmpDiffusionError as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
