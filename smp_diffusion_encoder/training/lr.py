"""The learning-rate schedule of every run: a linear warm-up, then a cosine decay to zero (few-shot heads,
:mod:`smp_diffusion_encoder.finetune.schedule`) or a constant rate (pretraining with ``--warmup-steps``).

``factor(step) = (step + 1) / warmup`` for the first ``warmup`` optimizer steps (``step`` 0-based), then
``0.5 * (1 + cos(pi * min(1, (step - warmup) / (steps - warmup))))`` for a run of ``steps`` steps, or ``1`` for a
run without a set length. Multiply the peak learning rate by it (``torch.optim.lr_scheduler.LambdaLR``).

timm's ``CosineLRScheduler`` (``warmup_prefix=True``, ``t_initial = steps - warmup``, ``lr_min=0``) computes the
same cosine after the warm-up, but its warm-up starts from ``warmup_lr_init`` at step 0 instead of
``peak / warmup`` (every warm-up step would move by one), and it is advanced with ``step_update`` outside torch's
LR-scheduler protocol that the :class:`~smp_diffusion_encoder.training.Trainer` steps and checkpoints; so the rule
stays this plain function.

Example:
    >>> [round(warmup_cosine(s, warmup=2, steps=6), 3) for s in range(6)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
    >>> warmup_cosine(99, warmup=10)
    1.0
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, warmup: int, steps: int | None = None) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (see the module docstring)."""
    if step < warmup:
        return (step + 1) / warmup
    if steps is None:
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


__all__ = ["warmup_cosine"]
