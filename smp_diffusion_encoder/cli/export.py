"""``smp-diffusion export RUN_DIR OUT_DIR [--variant ddpm-ct] [--use-ema | --no-use-ema]``.

Turns the U-Net weights of a pretraining run (EMA weights when present, unless told otherwise) into an
encoder weights folder (``config.json`` + ``model.safetensors`` + ``README.md``) that
``smp.Unet("<variant>")`` and ``timm.create_model("<timm name>")`` load; see
:mod:`smp_diffusion_encoder.generation.export`. Publish it with ``smp-diffusion push``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from smp_diffusion_encoder.encoder.variants import VARIANTS

    p = subparsers.add_parser("export", help="pretraining run -> encoder weights folder for smp and timm",
                              description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="pretraining run folder (or U-Net .safetensors)")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="weights folder to write")
    p.add_argument("--variant", default="ddpm-ct", choices=[v.smp_name for v in VARIANTS],
                   help="encoder variant whose architecture and features to export (default ddpm-ct)")
    p.add_argument("--use-ema", action=argparse.BooleanOptionalAction, default=None,
                   help="force EMA (--use-ema) or raw (--no-use-ema) weights; default: EMA when present")
    p.add_argument("--license", default=None, help="license for the model card (e.g. apache-2.0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.generation.export import export_encoder
    from smp_diffusion_encoder.generation.run import load_run

    info = load_run(args.run_dir, use_ema=args.use_ema)
    out = export_encoder(info, args.out_dir, variant=args.variant, license=args.license)
    print(f"exported {info.weights_kind} weights of {info.source} as {args.variant!r} -> {out}")
    return 0
