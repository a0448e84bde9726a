"""Helpers for running the ``pretrain`` command in a subprocess (one thread, no GPU, no torchrun variables)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Packages the GPU machine's image lacks (issue 23): pretraining from a slice store must not import them.
ABSENT_ON_DEVICE = ("segmentation_models_pytorch", "nibabel", "SimpleITK", "pydicom", "highdicom", "albumentations")


def import_blocker(folder: Path, names: tuple[str, ...] = ABSENT_ON_DEVICE) -> Path:
    """``folder`` holding a ``sitecustomize.py`` that makes importing any of ``names`` fail, as on the GPU
    machine; put ``folder`` first on ``PYTHONPATH`` of a subprocess."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        textwrap.dedent(f"""
        import sys

        class Absent:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {names!r}:
                    raise ModuleNotFoundError(f"{{name}} is absent on the GPU machine", name=name)

        sys.meta_path.insert(0, Absent())
    """)
    )
    return folder


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    return env


def pretrain_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "smp_diffusion_encoder.cli.main", "pretrain", *map(str, args)]


def run_cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(pretrain_cmd(*args), env=cli_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)
