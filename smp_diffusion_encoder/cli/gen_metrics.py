"""``smp-diffusion gen-metrics REAL FAKE --inception-weights PATH [--max-images N] [--out metrics.json]``.

FID, sFID, improved precision/recall (k=3) and F1 between real slices and generated samples, as
guided-diffusion's evaluator defines them (see :mod:`smp_diffusion_encoder.generation.metrics`). REAL and
FAKE are slice stores, ``smp-diffusion sample`` folders, ``.npy`` stacks or folders of grey PNGs. The
Inception-V3 weights are never downloaded: pass torchvision's ``inception_v3_google-0cc3c7bd.pth`` (or
set ``SMP_DIFFUSION_INCEPTION``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from smp_diffusion_encoder.cli._args import description


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "gen-metrics",
        help="FID / sFID / precision / recall / F1 of generated CT slices",
        description=description(__doc__),
    )
    p.add_argument("real", type=Path, metavar="REAL", help="real slices: slice store, .npy or PNG folder")
    p.add_argument("fake", type=Path, metavar="FAKE", help="samples: sample folder, .npy or PNG folder")
    p.add_argument(
        "--inception-weights",
        type=Path,
        default=None,
        help="local Inception-V3 weights (.pth or .safetensors); default $SMP_DIFFUSION_INCEPTION",
    )
    p.add_argument(
        "--max-images", type=int, default=None, help="seeded random subset of each set (default: all images)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per Inception forward pass (default: 32)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-images subsets (default: 0)")
    p.add_argument("--out", type=Path, default=None, help="also write the metrics as JSON (default: none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder._device import resolve_device
    from smp_diffusion_encoder._io import atomic_write_json
    from smp_diffusion_encoder.generation.evaluate import evaluate_generation

    result = evaluate_generation(
        args.real,
        args.fake,
        inception_weights=args.inception_weights,
        max_images=args.max_images,
        batch_size=args.batch_size,
        device=str(resolve_device(args.device)),
        seed=args.seed,
    )
    if args.out is not None:
        atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0
