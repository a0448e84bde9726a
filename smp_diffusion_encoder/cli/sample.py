"""``smp-diffusion sample RUN_OR_WEIGHTS --n 16 --sampler ddim --steps 50 --out DIR [--seed 0]``.

Draws CT slices from a pretraining run's U-Net (EMA weights when present) and writes a PNG grid, one PNG
per sample, a NumPy stack, a NIfTI stack in HU and ``samples.json`` (see
:mod:`smp_diffusion_encoder.generation.outputs`). RUN_OR_WEIGHTS is a run folder (``config.json`` +
``ema.safetensors`` / ``model.safetensors`` / ``checkpoints/last.pt``) or a ``.safetensors`` file of the
full U-Net state dict with ``config.json`` beside it (or ``--config``); see
:mod:`smp_diffusion_encoder.generation.run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sample", help="generate CT slices from a pretrained diffusion U-Net",
                              description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("source", type=Path, metavar="RUN_OR_WEIGHTS", help="pretraining run folder or U-Net .safetensors")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim")
    p.add_argument("--steps", type=int, default=None, help="respaced steps (default: 50 for ddim, T for ddpm)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (0 deterministic, 1 DDPM-like)")
    p.add_argument("--variance", choices=("auto", "fixed_small", "fixed_large", "learned"), default="auto",
                   help="DDPM variance (auto: learned when the U-Net predicts it, else fixed_large)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--use-ema", action=argparse.BooleanOptionalAction, default=None,
                   help="force EMA (--use-ema) or raw (--no-use-ema) weights; default: EMA when present")
    p.add_argument("--config", type=Path, default=None, help="run config JSON (default: config.json beside the weights)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from smp_diffusion_encoder.generation.outputs import save_samples
    from smp_diffusion_encoder.generation.run import load_run
    from smp_diffusion_encoder.generation.sampling import default_steps, sample

    info = load_run(args.source, use_ema=args.use_ema, config_path=args.config)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    steps = args.steps or default_steps(args.sampler, info.schedule.num_timesteps)
    x = sample(info.build_unet().to(device), info.schedule, args.n, sampler=args.sampler, steps=steps,
               eta=args.eta, variance=args.variance, seed=args.seed, batch_size=args.batch_size, device=device,
               progress=not args.no_progress)
    meta = {
        "source": str(info.source),
        "weights": f"{info.weights_file} ({info.weights_kind})",
        "step": info.step,
        "schedule": {"name": info.schedule.name, "num_timesteps": info.schedule.num_timesteps},
        "sampler": args.sampler,
        "steps": steps,
        "eta": args.eta,
        "variance": args.variance,
        "seed": args.seed,
        "batch_size": args.batch_size,
    }
    paths = save_samples(x, args.out, info.preprocessing, meta)
    print(f"{args.n} samples from {info.weights_file} ({info.weights_kind}) -> {paths['grid'].parent}")
    return 0
