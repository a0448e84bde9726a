"""``smp-diffusion finetune ROOT --out DIR``: few-shot training of a head on a few labeled slices.

Trains the paper's linear probe (--method probe) or Baranchuk's MLP ensemble (mlp) on cached frozen
features, or an smp decoder on the frozen encoder (unet, the default), through the shared training loop. The
schedule follows from the amount of labeled data and the head (--steps overrides it). Writes DIR/split.json,
DIR/config.json, DIR/checkpoint.pt, DIR/metrics.csv, DIR/loss.png, DIR/summary.json and the model folder
DIR/model, which smp-diffusion predict --model DIR/model runs; --ensemble N trains N models on the same
slices (DIR/members/member<k>, each with the files above) and DIR/model predicts with the mean of their
probabilities; DIR/ensemble.json records the settings --resume must repeat. --split FILE trains
on a given split (smp-diffusion split JSON; its evaluation slices validate). ROOT is a FLARE 2022 root, a case
folder (a label map and its image: a DICOM series folder or image.nii.gz) or a folder of case folders. Partly
labeled scans: a sidecar beside the label map lists its labeled axial slices (label.slices.json: see
smp_diffusion_encoder.data.labeled_slices); only those train, empty ones included; --budget all trains on every
one. Label maps may be 3D Slicer .seg.nrrd files (segment names mapped by --label-table). Several processes:
torchrun --nproc_per_node=N -m smp_diffusion_encoder.cli.main finetune ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from smp_diffusion_encoder.cli._args import add_config_arguments, description, given
from smp_diffusion_encoder.finetune.config import FinetuneConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="train a probe, MLP ensemble or smp decoder on a few labeled slices",
        description=description(__doc__),
    )
    p.add_argument(
        "root",
        type=Path,
        metavar="ROOT",
        help="labeled training cases: a FLARE 2022 root, a case folder or a folder of case folders",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="run folder (model in DIR/model)")
    add_config_arguments(p, FinetuneConfig)
    p.add_argument(
        "--split",
        type=Path,
        default=None,
        metavar="FILE",
        help="split JSON to train (and validate) on instead of drawing --budget (default: none)",
    )
    p.add_argument("--resume", action="store_true", help="continue DIR's checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.data.splits import read_split_json
    from smp_diffusion_encoder.finetune.api import finetune

    split = read_split_json(args.split) if args.split is not None else None
    result = finetune(
        args.root,
        FinetuneConfig(**given(args, FinetuneConfig)),
        out_dir=args.out,
        split=split,
        resume=args.resume,
        progress=not args.no_progress,
    )
    print(result.describe())
    print(
        f"model -> {result.model_dir} (predict with: smp-diffusion predict INPUT --model {result.model_dir} --out OUT)"
    )
    return 0
