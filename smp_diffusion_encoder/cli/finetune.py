"""``smp-diffusion finetune ROOT --method probe|mlp|unet --budget 4 --out DIR``: few-shot training of a head.

Trains a linear probe (``probe``) or Baranchuk's MLP ensemble (``mlp``) on cached frozen features, or an
smp decoder on the frozen encoder (``unet``) through the shared training loop; writes DIR/split.json, DIR/checkpoint.pt, DIR/metrics.csv,
DIR/loss.png and the model folder DIR/model, which ``smp-diffusion predict --model DIR/model`` runs.
``--split FILE`` trains on a given split (``smp-diffusion split`` JSON: its evaluation slices validate).
Several processes: ``torchrun --nproc_per_node=N -m smp_diffusion_encoder.cli.main finetune ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``finetune`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    p = subparsers.add_parser(
        "finetune", help="train a linear probe or an smp decoder on a few labeled slices -> model folder",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    p.add_argument("root", type=Path, metavar="ROOT", help="FLARE 2022 root with labeled training cases")
    p.add_argument("--method", required=True, choices=("probe", "mlp", "unet"),
                   help="linear probe, MLP ensemble or smp decoder")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="run folder (model in DIR/model)")
    p.add_argument("--budget", default="4", help="'4' slices, '1%%', '2cases' or 'all' (default 4)")
    p.add_argument("--split", type=Path, default=None, metavar="FILE",
                   help="split JSON to train (and validate) on instead of drawing --budget")
    p.add_argument("--encoder", default="ddpm-ct", help="smp encoder name (default ddpm-ct)")
    p.add_argument("--encoder-weights", default="auto",
                   help="weights key, or 'none' for random init (default auto: the encoder's default CT weights "
                        "when it has them, else random)")
    p.add_argument("--architecture", default="Unet", help="smp architecture for --method unet (default Unet)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-2 probe, 1e-3 unet)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="slices per step (default 4); pixels per member for mlp (default 2048)")
    p.add_argument("--mlp-members", type=int, default=10, help="MLP ensemble size (default 10)")
    p.add_argument("--seed", type=int, default=0, help="split and initialization seed (default 0)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="validation share of other slices (default 0.2)")
    p.add_argument("--val-every", type=int, default=25, help="validate every N steps (default 25)")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in validations (default 5)")
    p.add_argument("--augment", default="none", choices=("none", "light", "default"), help="unet only")
    p.add_argument("--unfreeze-at", type=int, default=None, help="train the encoder too from this step (unet)")
    p.add_argument("--encoder-lr-scale", type=float, default=0.1, help="encoder lr = lr * this (default 0.1)")
    p.add_argument("--resume", action="store_true", help="continue DIR's checkpoint")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="default cpu")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.data.splits import read_split_json
    from smp_diffusion_encoder.finetune import finetune

    split = read_split_json(args.split) if args.split is not None else None
    weights = None if args.encoder_weights.lower() == "none" else args.encoder_weights
    model_dir = finetune(
        args.root, method=args.method, out_dir=args.out, encoder=args.encoder, encoder_weights=weights,
        architecture=args.architecture, budget=args.budget, split=split, seed=args.seed, steps=args.steps, lr=args.lr,
        batch_size=args.batch_size, val_fraction=args.val_fraction, val_every=args.val_every,
        patience=args.patience, augment=args.augment, unfreeze_at=args.unfreeze_at,
        encoder_lr_scale=args.encoder_lr_scale, mlp_members=args.mlp_members, resume=args.resume, device=args.device,
        progress=not args.no_progress,
    )
    print(f"model -> {model_dir} (predict with: smp-diffusion predict INPUT --model {model_dir} --out OUT)")
    return 0
