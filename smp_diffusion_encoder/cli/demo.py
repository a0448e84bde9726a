"""``smp-diffusion demo [--out DIR]``: the offline demo on real CT (the README's main command).

Fine-tunes the ddpm-ct encoder (shipped default weights; frozen, with an smp Unet decoder) and, as the
baseline, the same decoder on a randomly initialized ddpm-ct on a few labeled slices of one real CT scan,
segments another real scan's DICOM series and the first scan's held-out slices, scores them with
the FLARE 2022 metrics and writes DIR/report/summary.md with tables, a DSC-vs-budget plot and overlays of the
other scan. Offline; running it again with the same DIR resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from smp_diffusion_encoder.cli._args import add_config_arguments, description, given
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.study.config import DEMO_METHODS, DEMO_STUDY, STANDARD_METHODS, StudyConfig

DEMO_DEFAULTS = {"budgets": DEMO_STUDY.budgets, "seeds": DEMO_STUDY.seeds}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="offline demo: few-shot segmentation of another real CT scan -> report",
        description=description(__doc__),
    )
    p.add_argument(
        "--out", type=Path, default=Path("demo_output"), metavar="DIR", help="output folder (default: demo_output)"
    )
    add_config_arguments(p, StudyConfig, exclude=("test_cases", "keep_models"), defaults=DEMO_DEFAULTS)
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(DEMO_METHODS),
        choices=STANDARD_METHODS,
        metavar="METHOD",
        help=f"methods to compare, of {', '.join(STANDARD_METHODS)} (default: {' '.join(DEMO_METHODS)})",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.study.demo import run_demo

    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"{args.out}: exists and is not a folder")
    config = StudyConfig(**{**DEMO_DEFAULTS, **given(args, StudyConfig)})
    summary = run_demo(args.out, config, methods=tuple(args.methods), progress=not args.no_progress)
    print(f"\nThe report is at {summary.resolve()}")
    return 0
