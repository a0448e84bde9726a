"""``smp-diffusion info``: the registered encoders, their weights, sizes and feature pyramids."""

from __future__ import annotations

import argparse

from smp_diffusion_encoder.cli._args import description


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="list the registered ddpm-ct encoders, their weights and feature pyramids",
        description=description(__doc__),
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from smp_diffusion_encoder.encoder.features import FeaturePyramid
    from smp_diffusion_encoder.registry.records import all_records

    print(f"{'smp name':<14} {'timm name':<22} {'params':>9}  {'default weights':<16} strides -> channels")
    for record in all_records():
        with torch.device("meta"):
            enc = FeaturePyramid(record.spec.unet, record.spec.features)
        n = sum(p.numel() for p in enc.parameters())
        pyramid = ", ".join(f"{s}:{c}" for s, c in zip(enc.strides, enc.channels))
        weights = "packaged (ct)" if record.packaged else (record.default_weights or "none")
        print(f"{record.smp_name:<14} {record.timm_name or '-':<22} {n / 1e6:>8.2f}M  {weights:<16} {pyramid}")
    return 0
