"""``smp-diffusion pretrain DATA --out RUN_DIR``: DDPM pretraining of the diffusion U-Net (also under torchrun).

Settings left out on ``--resume`` are taken from ``RUN_DIR/config.json``; settings given must agree with
the checkpoint (except ``--steps``, ``--ckpt-every``, ``--log-every``, ``--precision``, ``--workers``).
``--resume`` only reads the checkpoint this program wrote in ``RUN_DIR``; without a checkpoint yet it starts
afresh, so a preemptible job can always pass it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from smp_diffusion_encoder._io import read_json_object

DEFAULTS: dict[str, Any] = {"preset": "small", "schedule": "linear", "timesteps": 1000, "batch_size": 8,
                            "lr": 1e-4, "weight_decay": 0.0, "warmup_steps": 0, "seed": 0, "steps": 10_000,
                            "ema_decay": 0.9999, "precision": "auto", "ckpt_every": 1000, "log_every": 10,
                            "grad_clip": 1.0, "min_snr_gamma": None, "milestones": ()}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain", help="pretrain the diffusion U-Net (DDPM) on unlabeled CT slices",
        description="DATA is a slice store (smp-diffusion prepare-slices), a FLARE 2022 root or any folder of "
                    "NIfTI volumes / DICOM series (then a store is built in RUN_DIR/slices at the preset's "
                    "size). Multi-process: torchrun --nproc_per_node=N -m smp_diffusion_encoder.cli.main "
                    "pretrain ... (--batch-size is the global batch).")
    p.add_argument("data", type=Path, metavar="DATA")
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run folder")
    p.add_argument("--preset", help=f"U-Net preset: adm-256, small, tiny (default {DEFAULTS['preset']})")
    p.add_argument("--schedule", choices=["linear", "cosine"], help="noise schedule (default linear)")
    p.add_argument("--timesteps", type=int, help="diffusion steps T (default 1000)")
    p.add_argument("--steps", type=int, help=f"optimizer steps to reach (default {DEFAULTS['steps']})")
    p.add_argument("--batch-size", type=int, help=f"global batch size (default {DEFAULTS['batch_size']})")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0)")
    p.add_argument("--warmup-steps", type=int, help="linear LR warm-up steps (default 0)")
    p.add_argument("--ema-decay", type=float, help="EMA decay (default 0.9999)")
    p.add_argument("--no-ema", action="store_true", help="keep no EMA of the weights")
    p.add_argument("--grad-clip", type=float, help="gradient-norm clipping, 0 for none (default 1.0)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"],
                   help="bf16 autocast or fp32; default auto: measured at the start on this machine (bf16 on "
                        "CUDA and on CPUs where it is faster), recorded in RUN_DIR/config.json")
    p.add_argument("--min-snr-gamma", type=float,
                   help="min-SNR-gamma loss weighting over timesteps (Hang et al. 2023), e.g. 5 (default: none)")
    p.add_argument("--milestones", type=int, nargs="+", metavar="STEP",
                   help="steps whose EMA weights are kept in RUN_DIR/milestones/ (default: none)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="DataLoader workers per process, also used to build the slice store (default min(4, CPUs))")
    p.add_argument("--ckpt-every", type=int, help="checkpoint every N steps (default 1000)")
    p.add_argument("--log-every", type=int, help="log a metrics row every N steps (default 10)")
    p.add_argument("--seed", type=int, help="seed of initialization, data order and noise (default 0)")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR's checkpoint exactly")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _saved_settings(run_dir: Path) -> dict[str, Any]:
    """Flag values recorded in ``run_dir/config.json`` by an earlier run (empty if none)."""
    path = run_dir / "config.json"
    if not path.is_file():
        return {}
    saved = read_json_object(path)
    pre, train = saved.get("pretrain", {}), saved.get("train", {})
    out = {"schedule": pre.get("schedule"), "timesteps": pre.get("num_timesteps"), "batch_size": pre.get("batch_size"),
           "lr": pre.get("lr"), "weight_decay": pre.get("weight_decay"), "warmup_steps": pre.get("warmup_steps"),
           "seed": pre.get("seed"), "steps": train.get("max_steps"), "ema_decay": train.get("ema_decay"),
           "precision": train.get("precision"), "ckpt_every": train.get("ckpt_every"),
           "log_every": train.get("log_every"), "grad_clip": train.get("grad_clip"), "unet": pre.get("unet"),
           "min_snr_gamma": pre.get("min_snr_gamma"), "milestones": train.get("milestones")}
    return {k: v for k, v in out.items() if v is not None or k in ("ema_decay", "grad_clip", "min_snr_gamma")}


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.models import UNetConfig, get_preset
    from smp_diffusion_encoder.training.distributed import barrier, init_distributed, shutdown
    from smp_diffusion_encoder.training.pretrain import PretrainConfig, prepare_store, run_pretraining

    saved = _saved_settings(args.out) if args.resume else {}
    given = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    if args.no_ema:
        given["ema_decay"] = None
    if given.get("grad_clip") == 0:
        given["grad_clip"] = None
    s = {**DEFAULTS, **saved, **given}
    unet = get_preset(s["preset"]) if "preset" in given or "unet" not in saved else UNetConfig.from_dict(saved["unet"])
    cfg = PretrainConfig(unet=unet, schedule=s["schedule"], num_timesteps=s["timesteps"], batch_size=s["batch_size"],
                         lr=s["lr"], weight_decay=s["weight_decay"], warmup_steps=s["warmup_steps"], seed=s["seed"],
                         min_snr_gamma=s["min_snr_gamma"])
    info = init_distributed(args.device)
    try:
        progress = not args.no_progress
        if info.is_main:
            store = prepare_store(args.data, args.out, unet.image_size, workers=max(args.workers, 1),
                                  progress=progress)
        barrier()
        if not info.is_main:
            store = args.data if (args.data / "manifest.json").is_file() else args.out / "slices"
        trainer = run_pretraining(store, args.out, cfg, max_steps=s["steps"], ema_decay=s["ema_decay"],
                                  precision=s["precision"], grad_clip=s["grad_clip"], log_every=s["log_every"],
                                  ckpt_every=s["ckpt_every"], workers=args.workers, milestones=s["milestones"],
                                  command=shlex.join(["smp-diffusion", *sys.argv[1:]]), resume=args.resume,
                                  progress=progress, dist_info=info)
        if info.is_main:
            last = trainer.history[-1] if trainer.history else {}
            print(f"step {trainer.global_step}: loss {last.get('loss', float('nan')):.4g}; "
                  f"checkpoint {trainer.checkpoint_path}")
    finally:
        shutdown()
    return 0
