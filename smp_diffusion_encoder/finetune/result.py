"""What a fine-tuning run is and leaves behind: its result, the names of its files, the settings it records.

Shared by :mod:`~smp_diffusion_encoder.finetune.api` (one run) and :mod:`~smp_diffusion_encoder.finetune.ensemble`
(several runs as one model).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smp_diffusion_encoder.finetune.config import FinetuneConfig

MODEL_DIR_NAME = "model"
CONFIG_NAME = "config.json"
SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class FinetuneResult:
    """How a fine-tuning run went (also ``DIR/summary.json``).

    Attributes:
        model_dir: the model folder ``smp-diffusion predict --model`` takes.
        steps: optimizer steps done; ``planned``: the schedule's length.
        reason: why it stopped (schedule complete, or early stopping and when).
        best_val_dice, best_step: best validation mean slice DSC and its step (``None`` without validation).
        flattened, flatness: whether the training loss had flattened by the end, and the numbers behind it.
        schedule: the schedule's one-line explanation.
    """

    model_dir: Path
    steps: int
    planned: int
    reason: str
    best_val_dice: float | None
    best_step: int | None
    flattened: bool | None
    flatness: str
    schedule: str

    def describe(self) -> str:
        """Lines for the command line."""
        lines = [f"stopped after {self.steps} of {self.planned} steps: {self.reason}", self.flatness]
        if self.best_val_dice is not None:
            lines.insert(1, f"best validation mean slice DSC {self.best_val_dice:.4f} at step {self.best_step}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "model_dir": str(self.model_dir)}


#: The folder of an ensemble run (``--ensemble N``) that holds its member runs.
MEMBERS_DIR_NAME = "members"


def recorded_settings(config: FinetuneConfig, **extra: Any) -> dict[str, Any]:
    """What a run trains with, as its checkpoint and ``resume`` compare it: ``config`` and ``extra`` without the
    device and precision (how fast, not what: a run may resume on another machine)."""
    settings = {**config.to_dict(), **extra}
    settings.pop("device")
    settings.pop("precision")
    return settings


__all__ = ["CONFIG_NAME", "MEMBERS_DIR_NAME", "MODEL_DIR_NAME", "SUMMARY_NAME", "FinetuneResult", "recorded_settings"]
