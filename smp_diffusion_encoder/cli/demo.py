"""``smp-diffusion demo [--out DIR]``: the offline demo (the README's main command).

CT phantom -> few-shot fine-tuning of ``ddpm-ct`` (shipped default weights; frozen, Unet decoder and linear
probe) and of a resnet34 Unet from scratch at 4 slices, 25% and all slices -> predictions of two held-out
volumes -> FLARE 2022 DSC/NSD -> DIR/report/summary.md with tables, a DSC-vs-budget plot and overlay PNGs.
About 12 minutes on 2 CPU cores; running it again with the same DIR resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from smp_diffusion_encoder.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="offline demo: few-shot segmentation of a CT phantom -> report",
                              description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("--out", type=Path, default=Path("demo_output"), metavar="DIR",
                   help="output folder (default demo_output)")
    p.add_argument("--steps", type=int, default=150, help="training steps per method and budget (default 150)")
    p.add_argument("--budgets", nargs="+", default=["4", "25%", "all"], help="label budgets (default 4 25%% all)")
    p.add_argument("--image-size", type=int, default=128, help="model input size (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, splits and training (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.study.demo import run_demo

    if args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"{args.out}: exists and is not a folder")
    summary = run_demo(args.out, steps=args.steps, budgets=tuple(args.budgets), seed=args.seed,
                       image_size=args.image_size,
                       progress=not args.no_progress)
    print(f"\nThe report is at {summary.resolve()}")
    return 0
