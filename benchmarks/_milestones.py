"""Milestone weights of a pretraining run as registered encoder names (shared by the benchmark scripts)."""

from __future__ import annotations

from pathlib import Path

from smp_diffusion_encoder.formats.export import export_encoder
from smp_diffusion_encoder.formats.run_folder import milestones
from smp_diffusion_encoder.registry import register_encoder_from_folder


def milestone_encoder(run_dir: Path, step: int, weights_root: Path, variant: str = "ddpm-ct") -> str:
    """Export the EMA weights the run kept at ``step`` (once) and register them as ``<variant>-step<step>``."""
    folder = weights_root / f"step-{step:07d}"
    if not (folder / "model.safetensors").is_file():
        export_encoder(run_dir, folder, variant=variant, milestone=step)
    return register_encoder_from_folder(f"{variant}-step{step}", folder)


def available_milestones(run_dir: Path) -> list[int]:
    return list(milestones(run_dir))
