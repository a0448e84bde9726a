"""What the recipe benchmarks on ONE labeled scan share: their options, the held-out plan, resumable rows.

``z_features`` and ``ensemble`` train on a few slices of one labeled scan, choose on its held-out z blocks
(:func:`smp_diffusion_encoder.study.protocol.holdout`) and only report on ``--test`` scans; every finished seed
is a block of rows in ``OUT/results.csv`` that a second run reads back instead of training again.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smp_diffusion_encoder._device import resolve_precision
from smp_diffusion_encoder._io import atomic_write_text
from smp_diffusion_encoder.data.flare import Case, find_labeled_cases
from smp_diffusion_encoder.finetune.data import labeled_cases
from smp_diffusion_encoder.study.config import StudyConfig
from smp_diffusion_encoder.study.protocol import CROSS_PATIENT, WITHIN_VOLUME, Holdout, holdout


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options every one-scan benchmark takes (data, seeds, encoder, schedule overrides, held-out blocks)."""
    p.add_argument("root", type=Path, help="FLARE-layout root or case folder with ONE labeled scan")
    p.add_argument("--test", type=Path, action="append", default=[], help="other labeled scans: report only")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", default="4")
    p.add_argument("--encoder", default="ddpm-ct")
    p.add_argument("--weights", default="ct", help="encoder weights ('none': random)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="decoder steps (default: finetune's schedule rule)")
    p.add_argument("--views", type=int, default=None, help="views per labeled slice (default: finetune's rule)")
    p.add_argument("--block", type=int, default=StudyConfig.block)
    p.add_argument("--gap", type=int, default=StudyConfig.gap)
    p.add_argument("--precision", default="auto")


@dataclass(frozen=True)
class OneScan:
    """The labeled scan, its held-out plan, the scans to score ``(protocol, case, slices; () = all)``, the
    precision the run uses, the encoder weights (``None``: random) and the rows already in ``OUT/results.csv``."""

    case: Case
    plan: Holdout
    scans: list[tuple[str, Case, tuple[int, ...]]]
    precision: str
    weights: str | None
    rows: list[dict[str, Any]]

    @property
    def done(self) -> set[int]:
        return {int(r["seed"]) for r in self.rows}


def prepare(p: argparse.ArgumentParser, args: argparse.Namespace) -> OneScan:
    """Check the data (exactly one labeled scan, else ``p.error``), plan the held-out blocks, read earlier rows."""
    found = labeled_cases(args.root)
    if len(found) != 1:
        p.error(f"{args.root}: needs exactly one labeled scan (its held-out z blocks choose), found {len(found)}")
    tests = [case for path in args.test for case in find_labeled_cases(path)]
    plan = holdout(found, StudyConfig(block=args.block, gap=args.gap), tests=tests)
    scans = [(WITHIN_VOLUME, plan.train_cases[0], tuple(plan.evaluation[0][1]))]
    scans += [(CROSS_PATIENT, t, ()) for t in plan.tests]
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / "results.csv"
    rows = list(csv.DictReader(csv_path.open())) if csv_path.is_file() else []
    precision = resolve_precision(args.precision, torch.device("cpu"))
    weights = None if args.weights == "none" else args.weights
    return OneScan(plan.train_cases[0], plan, scans, precision, weights, rows)


def write_rows(path: Path, fields: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """All rows to ``path`` at once (atomic): a seed lands whole or not at all."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
