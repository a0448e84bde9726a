"""``smp-diffusion export RUN_DIR OUT_DIR``: pretraining run -> encoder weights folder for smp and timm.

Turns the U-Net weights of a pretraining run (its EMA weights when present, or those kept at a milestone
step) into an encoder weights folder (config.json + model.safetensors + README.md) that
smp.Unet("<variant>") and timm.create_model("<timm name>") load. Publish it with smp-diffusion push.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from smp_diffusion_encoder.cli._args import description


def register(subparsers: argparse._SubParsersAction) -> None:
    from smp_diffusion_encoder.encoder.variants import VARIANTS

    p = subparsers.add_parser(
        "export", help="pretraining run -> encoder weights folder for smp and timm", description=description(__doc__)
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="pretraining run folder (or U-Net .safetensors)")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="weights folder to write")
    p.add_argument(
        "--variant",
        default="ddpm-ct",
        choices=[v.smp_name for v in VARIANTS],
        help="encoder variant whose architecture and features to export (default: ddpm-ct)",
    )
    p.add_argument(
        "--milestone",
        type=int,
        default=None,
        metavar="STEP",
        help="export the weights the run kept at this step (default: its latest)",
    )
    p.add_argument(
        "--use-ema",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force EMA (--use-ema) or raw (--no-use-ema) weights (default: EMA when present)",
    )
    p.add_argument("--license", default=None, help="license for the model card, e.g. apache-2.0 (default: none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.hub.export import export_encoder
    from smp_diffusion_encoder.training.run_folder import load_run

    info = load_run(args.run_dir, use_ema=args.use_ema, milestone=args.milestone)
    out = export_encoder(info, args.out_dir, variant=args.variant, license=args.license)
    print(f"exported {info.weights_kind} weights of {info.source} (step {info.step}) as {args.variant!r} -> {out}")
    return 0
