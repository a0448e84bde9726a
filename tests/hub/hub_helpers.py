"""Helpers shared by the hub tests: tiny seeded weights, fresh-interpreter runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.encoder import EncoderSpec, FeatureConfig, FeaturePyramid
from smp_diffusion_encoder.hub import save_encoder_weights

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = "tiny"


def tiny_encoder(seed: int = 0) -> FeaturePyramid:
    """The ``ddpm-ct-tiny`` architecture with seeded, non-default weights (so loading is observable)."""
    torch.manual_seed(seed)
    enc = FeaturePyramid(TINY, FeatureConfig())
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return enc


def write_tiny_weights(folder: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    enc = tiny_encoder(seed)
    save_encoder_weights(
        enc,
        folder,
        EncoderSpec(TINY, FeatureConfig()),
        PreprocessingConfig(image_size=64),
        card={"license": "apache-2.0", "pretraining_data": "synthetic test data"},
    )
    return {k: v.clone() for k, v in enc.state_dict().items()}


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def run_python(code: str, env: dict[str, str], timeout: float = 60) -> str:
    """Run ``code`` in a fresh interpreter (repo root on the path); return stdout, fail with stderr."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SMP_DIFFUSION"))}
    full_env.update(
        {
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "PYTHONPATH": str(REPO_ROOT),
            "NO_PROXY": "127.0.0.1,localhost",
            "OMP_NUM_THREADS": "1",
        },
        **env,
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
