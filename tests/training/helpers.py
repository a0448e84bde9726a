"""Helpers for running the ``pretrain`` command in a subprocess (one thread, no GPU, no torchrun variables)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    return env


def pretrain_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "smp_diffusion_encoder.cli.main", "pretrain", *map(str, args)]


def run_cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(pretrain_cmd(*args), env=cli_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)
