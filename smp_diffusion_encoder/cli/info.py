"""``smp-diffusion info``: the registered encoder variants, their sizes and feature channels."""

from __future__ import annotations

import argparse

import torch


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="list the registered ddpm-ct encoders and their feature pyramids")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.encoder import VARIANTS, FeaturePyramid

    print(f"{'smp name':<14} {'timm name':<22} {'preset':<8} {'params':>9}  strides -> channels")
    for v in VARIANTS:
        with torch.device("meta"):
            enc = FeaturePyramid(v.preset, v.features)
        n = sum(p.numel() for p in enc.parameters())
        pyramid = ", ".join(f"{s}:{c}" for s, c in zip(enc.strides, enc.channels))
        print(f"{v.smp_name:<14} {v.timm_name:<22} {v.preset:<8} {n / 1e6:>8.2f}M  {pyramid}")
    return 0
