"""``smp-diffusion pretrain DATA --out RUN_DIR``: DDPM pretraining of the diffusion U-Net (also under torchrun).

DATA is a slice store (``smp-diffusion prepare-slices``), a FLARE 2022 root (its unlabeled images) or any
folder of NIfTI volumes / DICOM series; then a store is built in RUN_DIR/slices at the preset's size.
Several processes: ``torchrun --nproc_per_node=N -m smp_diffusion_encoder.cli.main pretrain ...``
(--batch-size is the global batch). On --resume, settings left out are taken from RUN_DIR/config.json;
settings given must agree with the checkpoint for what defines the run (preset, schedule, batch size,
learning rate, warm-up, loss weighting, seed); --resume without a checkpoint yet starts afresh, so a
preemptible job can always pass it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from smp_diffusion_encoder.cli._args import add_config_arguments, description, given
from smp_diffusion_encoder.training.config import PretrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain", help="pretrain the diffusion U-Net (DDPM) on unlabeled CT slices", description=description(__doc__)
    )
    p.add_argument("data", type=Path, metavar="DATA", help="slice store, FLARE 2022 root or folder of volumes")
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run folder")
    add_config_arguments(p, PretrainConfig)
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when available (default: auto)"
    )
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR's checkpoint exactly")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.training.distributed import barrier, init_distributed, shutdown
    from smp_diffusion_encoder.training.pretrain import prepare_store, run_pretraining
    from smp_diffusion_encoder.training.run_folder import saved_settings

    saved = saved_settings(args.out) if args.resume else {}
    config = PretrainConfig.from_dict({**saved, **given(args, PretrainConfig)})
    info = init_distributed(None if args.device == "auto" else args.device)
    try:
        progress = not args.no_progress
        store = args.data if (args.data / "manifest.json").is_file() else args.out / "slices"
        if info.is_main:
            store = prepare_store(
                args.data, args.out, config.unet.image_size, workers=max(config.workers, 1), progress=progress
            )
        barrier()
        trainer = run_pretraining(
            store,
            args.out,
            config,
            command=shlex.join(["smp-diffusion", *sys.argv[1:]]),
            resume=args.resume,
            progress=progress,
            dist_info=info,
        )
        if info.is_main:
            last = trainer.history[-1] if trainer.history else {}
            print(
                f"step {trainer.global_step}: loss {last.get('loss', float('nan')):.4g}; "
                f"checkpoint {trainer.checkpoint_path}"
            )
    finally:
        shutdown()
    return 0
