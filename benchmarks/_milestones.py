"""Milestone weights of a pretraining run as registered encoder names (shared by the benchmark scripts)."""

from __future__ import annotations

import csv
from pathlib import Path

from smp_diffusion_encoder.hub.export import export_encoder
from smp_diffusion_encoder.registry import register_encoder_from_folder
from smp_diffusion_encoder.training.run_folder import milestones, read_run_config


def milestone_encoder(run_dir: Path, step: int, weights_root: Path, variant: str = "ddpm-ct") -> str:
    """Export the EMA weights the run kept at ``step`` (once) and register them as ``<variant>-step<step>``."""
    folder = weights_root / f"step-{step:07d}"
    if not (folder / "model.safetensors").is_file():
        export_encoder(run_dir, folder, variant=variant, milestone=step)
    return register_encoder_from_folder(f"{variant}-step{step}", folder)


def available_milestones(run_dir: Path) -> list[int]:
    return list(milestones(run_dir))


def core_hours(run_dir: Path) -> dict[int, float]:
    """``{step: hours}``: training time to reach each logged step, summed from the run's ``metrics.csv``
    windows (``log_every * batch / images_per_s``); single-threaded runs make these CPU-core hours."""
    batch = int(read_run_config(run_dir / "config.json")["pretrain"]["batch_size"])
    hours, total, previous = {0: 0.0}, 0.0, 0
    with open(run_dir / "metrics.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if not row.get("images_per_s"):
                continue
            step = int(float(row["step"]))
            total += (step - previous) * batch / float(row["images_per_s"]) / 3600
            hours[step], previous = total, step
    return hours


def hours_at(hours: dict[int, float], step: int) -> float:
    """Hours to reach ``step`` (interpolated between logged steps)."""
    below = max(s for s in hours if s <= step)
    above = [s for s in hours if s >= step]
    if not above:
        return hours[below]
    nxt = min(above)
    if nxt == below:
        return hours[below]
    return hours[below] + (hours[nxt] - hours[below]) * (step - below) / (nxt - below)
