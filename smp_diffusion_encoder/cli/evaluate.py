"""``smp-diffusion evaluate PRED_DIR GT_DIR --out metrics.csv [--summary summary.md]``.

Scores every ground-truth label map in GT_DIR against the prediction of the same case name in PRED_DIR
(NIfTI, NRRD or MetaImage files; ``case.nrrd`` is matched with ``case.nii.gz``) with the FLARE 2022 rules
(per-organ DSC and NSD), writes the official per-case CSV and optionally a markdown summary (both
atomically), and prints the summary: per organ DSC, NSD and the predicted-to-true volume ratio, then a
confusion table (which label the prediction puts inside each true organ), so over-segmentation and swapped
organs show at a glance. Label ids that are not FLARE ids (0..13), such as 255 or 14, are refused (exit
status 2, naming the file and the ids) as check-data refuses them, unless --labels-convention maps the ground
truth from another convention (amos, btcv, totalsegmentator, word; ids outside its table become background).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from smp_diffusion_encoder.cli._args import description
from smp_diffusion_encoder.data.remap import CONVENTIONS


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    parser = subparsers.add_parser(
        "evaluate",
        help="FLARE 2022 DSC/NSD of predicted label maps against ground truth",
        description=description(__doc__),
    )
    parser.add_argument(
        "pred_dir", type=Path, metavar="PRED_DIR", help="folder of predicted label maps (.nii.gz, .nrrd, .mha...)"
    )
    parser.add_argument(
        "gt_dir", type=Path, metavar="GT_DIR", help="folder of ground-truth label maps (.nii.gz, .nrrd, .mha...)"
    )
    parser.add_argument("--out", type=Path, required=True, help="per-case CSV to write (official column names)")
    parser.add_argument(
        "--summary", type=Path, default=None, help="also write the summary as a markdown file (default: none)"
    )
    parser.add_argument(
        "--labels-convention",
        choices=sorted(CONVENTIONS),
        default="flare",
        help="label ids of the ground truth, mapped to FLARE ids (default: flare; unknown ids are "
        "then refused, as check-data refuses them)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.evaluation import (
        evaluate_folder,
        format_summary_markdown,
        write_metrics_csv,
        write_summary_markdown,
    )

    results = evaluate_folder(
        args.pred_dir, args.gt_dir, progress=not args.no_progress, labels_convention=args.labels_convention
    )
    write_metrics_csv(results, args.out)
    if args.summary is not None:
        write_summary_markdown(results, args.summary)
    sys.stdout.write(format_summary_markdown(results))
    return 0
