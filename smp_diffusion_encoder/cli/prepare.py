"""``smp-diffusion prepare-slices SRC OUT_DIR``: preprocess an unlabeled pool into a resumable slice store."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare-slices", help="preprocess CT volumes once into a sharded slice store for pretraining",
        description="SRC is a FLARE 2022 root (its unlabeled and labeled training images are used) or any "
                    "folder of NIfTI volumes / DICOM series. Resumable: run it again after an interruption.")
    p.add_argument("src", type=Path, metavar="SRC")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="worker processes (default min(4, CPUs)); 1 works in this process")
    p.add_argument("--image-size", type=int, default=256, help="slice size in pixels (default 256)")
    p.add_argument("--hu-window", type=float, nargs=2, default=(-160.0, 240.0), metavar=("LOW", "HIGH"),
                   help="HU window mapped to [-1, 1] (default -160 240)")
    p.add_argument("--overwrite", action="store_true", help="rebuild a store made with other settings")
    p.add_argument("--skip-bad", action="store_true", help="record unreadable volumes and go on")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def source_volumes(src: Path) -> list[Path]:
    """Images to prepare: a FLARE root's unlabeled + labeled training images, else every volume under ``src``."""
    from smp_diffusion_encoder.data.flare import FlareDataset, discover_volumes

    if (src / "Training").is_dir():
        ds = FlareDataset.discover(src)
        return [c.image for c in (*ds.unlabeled, *ds.labeled)]
    return discover_volumes(src)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.data.preprocess import PreprocessConfig
    from smp_diffusion_encoder.data.slice_store import build_slice_store

    cfg = PreprocessConfig(hu_window=tuple(args.hu_window), image_size=args.image_size)
    volumes = source_volumes(args.src)
    manifest = build_slice_store(volumes, args.out_dir, cfg, workers=args.workers, overwrite=args.overwrite,
                                 skip_bad=args.skip_bad, progress=not args.no_progress)
    print(f"{manifest['n_slices']} slices from {len(manifest['shards'])} volumes in {args.out_dir}")
    for bad in manifest["bad"]:
        print(f"skipped {bad['source']}: {bad['error']}")
    return 0
