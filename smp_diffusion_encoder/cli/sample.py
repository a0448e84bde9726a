"""``smp-diffusion sample RUN_OR_WEIGHTS --out DIR``: draw CT slices from a pretrained diffusion U-Net.

Writes a PNG grid, one PNG per sample, a NumPy stack, a NIfTI stack in HU and samples.json (how they were
made). RUN_OR_WEIGHTS is a pretraining run folder (EMA weights when present; --milestone STEP for the weights
kept at a step) or a .safetensors file of the full U-Net state dict with config.json beside it (or --config).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from smp_diffusion_encoder.cli._args import add_config_arguments, description, given
from smp_diffusion_encoder.generation.config import SampleConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sample", help="generate CT slices from a pretrained diffusion U-Net", description=description(__doc__)
    )
    p.add_argument("source", type=Path, metavar="RUN_OR_WEIGHTS", help="pretraining run folder or U-Net .safetensors")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    add_config_arguments(p, SampleConfig)
    p.add_argument(
        "--milestone",
        type=int,
        default=None,
        metavar="STEP",
        help="use the run's weights kept at this step (default: its latest EMA weights)",
    )
    p.add_argument(
        "--use-ema",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force EMA (--use-ema) or raw (--no-use-ema) weights (default: EMA when present)",
    )
    p.add_argument(
        "--config", type=Path, default=None, help="run config JSON (default: config.json beside the weights)"
    )
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when available (default: auto)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder._device import resolve_device
    from smp_diffusion_encoder.generation.outputs import save_samples
    from smp_diffusion_encoder.generation.sampling import sample
    from smp_diffusion_encoder.training.run_folder import load_run

    config = SampleConfig(**given(args, SampleConfig))
    info = load_run(args.source, use_ema=args.use_ema, config_path=args.config, milestone=args.milestone)
    device = resolve_device(args.device)
    x = sample(info.build_unet().to(device), info.schedule, config, device=device, progress=not args.no_progress)
    meta = {
        "source": str(info.source),
        "weights": f"{info.weights_file} ({info.weights_kind})",
        "step": info.step,
        "schedule": info.schedule.to_dict(),
        **config.to_dict(),
        "steps": config.resolved_steps(info.schedule.num_timesteps),
    }
    paths = save_samples(x, args.out, info.preprocessing, meta)
    print(f"{config.num_samples} samples from {info.weights_file} ({info.weights_kind}) -> {paths['grid'].parent}")
    return 0
