"""``smp-diffusion split FLARE_ROOT --budget 4``: choose few-shot labeled slices reproducibly (JSON)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "split",
        help="choose the labeled slices of a few-shot budget (4, 1%%, 2cases, all) as split JSON",
        description="Reads the label maps of FLARE_ROOT's labeled training cases (each must lie on its image's "
        "grid) and writes the chosen (case_id, z) slices; the policy is documented in "
        "smp_diffusion_encoder.data.splits.",
    )
    p.add_argument("root", type=Path, metavar="FLARE_ROOT")
    p.add_argument("--budget", required=True, help="'4' slices, '1%%' of eligible slices, '2cases' or 'all'")
    p.add_argument("--seed", type=int, default=0, help="selection seed (default 0)")
    p.add_argument("--out", type=Path, required=True, help="split JSON to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.data.flare import FlareDataset
    from smp_diffusion_encoder.data.splits import LabelBudget, eligible_slices, select_slices, write_split_json
    from smp_diffusion_encoder.data.volume import check_pair, read_volume
    from smp_diffusion_encoder.errors import DatasetLayoutError

    budget = LabelBudget.parse(args.budget)  # fail fast, before reading any file
    ds = FlareDataset.discover(args.root)
    if not ds.labeled:
        raise DatasetLayoutError(args.root, "has no labeled training cases (Training/FLARE22_LabeledCase50)")
    eligible = {}
    for c in ds.labeled:  # a label map that does not fit its image is refused, as check-data and finetune do
        label = read_volume(c.label, kind="label")
        check_pair(read_volume(c.image, kind="image"), label)
        eligible[c.case_id] = eligible_slices(label.array)
    split = select_slices(eligible, budget, args.seed)
    write_split_json(args.out, split)
    cases = len(split.by_case())
    print(
        f"{len(split.train)} labeled slices from {cases} cases (budget {split.budget}, seed {split.seed}) -> {args.out}"
    )
    return 0
