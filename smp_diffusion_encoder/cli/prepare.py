"""``smp-diffusion prepare-slices SRC OUT_DIR``: preprocess an unlabeled pool into a resumable slice store."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare-slices",
        help="preprocess CT volumes once into a sharded slice store for pretraining",
        description="SRC is a FLARE 2022 root (its unlabeled training images; --include-labeled adds the labeled "
        "ones), a folder of NIfTI volumes / DICOM series, or one volume; several SRC are pooled. "
        "Resumable: run it again after an interruption.",
    )
    p.add_argument("src", type=Path, nargs="+", metavar="SRC")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="worker processes (default min(4, CPUs)); 1 works in this process",
    )
    p.add_argument("--image-size", type=int, default=256, help="slice size in pixels (default 256)")
    p.add_argument(
        "--spacing-mm",
        default="auto",
        help="in-plane pixel spacing of the slices in mm; 'auto' (default): 384 mm / image size; "
        "'none': squeeze each slice's whole field of view into the image size (legacy)",
    )
    p.add_argument(
        "--hu-window",
        type=float,
        nargs=2,
        default=(-160.0, 240.0),
        metavar=("LOW", "HIGH"),
        help="HU window mapped to [-1, 1] (default -160 240)",
    )
    p.add_argument(
        "--include-labeled",
        action="store_true",
        help="also use a FLARE root's labeled training images (default: unlabeled ones only)",
    )
    p.add_argument("--overwrite", action="store_true", help="rebuild a store made with other settings")
    p.add_argument("--skip-bad", action="store_true", help="record unreadable volumes and go on")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
    from smp_diffusion_encoder.data.slice_store import build_slice_store
    from smp_diffusion_encoder.training.pretrain import source_volumes

    spacing = args.spacing_mm.lower()
    cfg = PreprocessingConfig(
        hu_window=tuple(args.hu_window),
        image_size=args.image_size,
        spacing_mm=None if spacing == "none" else "auto" if spacing == "auto" else float(spacing),
    )
    volumes = [v for src in args.src for v in source_volumes(src, include_labeled=args.include_labeled)]
    manifest = build_slice_store(
        volumes,
        args.out_dir,
        cfg,
        workers=args.workers,
        overwrite=args.overwrite,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
    )
    print(f"{manifest['n_slices']} slices from {len(manifest['shards'])} volumes in {args.out_dir}")
    for bad in manifest["bad"]:
        print(f"skipped {bad['source']}: {bad['error']}")
    return 0
