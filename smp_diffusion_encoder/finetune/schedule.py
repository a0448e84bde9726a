"""How long and at what learning rate a few-shot head trains: a rule of the labeled data and the head.

Length (optimizer steps): ``clamp(ceil(epochs * items / batch), min_steps, max_steps)`` where ``items`` is the
number of labeled training slices (pixels of them for the MLP ensemble, whose batches count pixels):

=======  ==================================  ======  =========  =========  ===========
head     items                               epochs  min_steps  max_steps  peak lr
=======  ==================================  ======  =========  =========  ===========
unet     slices                              160     250        5000       1e-3
unet     slices, augmented views (default)   320     500        5000       1e-3
probe    slices                              200     1000       6000       1e-2
mlp      labeled pixels (slices x S x S)     2       1000       8000       1e-3
=======  ==================================  ======  =========  =========  ===========

With augmented views (the default, :mod:`smp_diffusion_encoder.finetune.data`) the decoder sees harder, more
varied data and needs longer: on the held-out z blocks of realct (validation data; 4 labeled slices, 3 seeds) the
decoder scored 0.481 +- 0.037 mean DSC on the first rule's length, 0.539 +- 0.034 on twice and 0.550 +- 0.032 on
four times it (and 0.543 +- 0.021 on twice at a 3x learning rate); at 16 slices 0.578 +- 0.009 once vs 0.614 +-
0.017 twice. Twice is the rule: four times scored within the seeds' spread at twice the CPU time. The probe and the
MLP ensemble keep their rules on augmented views (not measured).

Without augmentation a frozen-encoder decoder trains 250 steps on 4 slices (250 passes over them at batch 4), 960 on 24 and
5000 (the cap) from 125 slices on; ``min_steps`` is what a handful of slices needs to fit, ``max_steps`` caps the
cost of large budgets. The learning rate warms up linearly over the first 5% of steps (at least 10), then follows
a cosine decay to 0: the last steps take small updates, so the loss flattens by the end of a run long enough
for its data; every run reports whether it did (on realct the decoder's loss at 24 slices was still falling:
``benchmarks/results/fewshot_realct.md``).

The numbers are measured, not assumed (``benchmarks/results/finetune_schedule.md``: each head trained with half,
once and twice a rule's length at 4 and 24 labeled slices of realct, scored on held-out slices and on another
scan). With the first rule (unet 60 epochs / min 500, probe 100 / min 500) the Unet decoder scored the same at
half, once and twice the length on 4 slices, but gained 0.06 held-out DSC from twice the length on 24 slices; the
probe gained from twice the length at both budgets. Hence fewer minimum steps and more epochs for the decoder,
twice the probe's.

Validation (and early stopping) only with at least ``min_val_slices`` validation slices (default 8): fewer
slices are too noisy a score to pick a model by (one slice decided the 25% budget of the old demo). Then the
validation slices are scored 10 times over the run, the best model is kept, and training stops after
``patience`` scores without improvement. Otherwise the whole schedule runs and the last model is kept.

Example:
    >>> plan = plan_schedule("unet", n_slices=4, image_size=128, batch_size=4, n_val=0, min_val_slices=8)
    >>> plan.steps, plan.warmup, plan.val_every
    (250, 12, 0)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from smp_diffusion_encoder.errors import ConfigError


@dataclass(frozen=True)
class ScheduleRule:
    epochs: float
    min_steps: int
    max_steps: int


RULES: dict[str, ScheduleRule] = {
    "unet": ScheduleRule(160, 250, 5000),
    "probe": ScheduleRule(200, 1000, 6000),
    "mlp": ScheduleRule(2, 1000, 8000),
}
#: The decoder's rule when it trains on augmented views: twice the epochs and the minimum (measured on validation
#: data, ``benchmarks/results/recipe_transfer.md``).
AUGMENTED_RULES: dict[str, ScheduleRule] = {"unet": ScheduleRule(320, 500, 5000)}
WARMUP_FRACTION = 0.05
VALIDATIONS_PER_RUN = 10


@dataclass(frozen=True)
class SchedulePlan:
    """A run's schedule: ``steps``, linear ``warmup`` steps, ``val_every`` (0: no validation) and why."""

    steps: int
    warmup: int
    val_every: int
    reason: str

    def lr_factor(self, step: int) -> float:
        """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_schedule(
    method: Literal["probe", "mlp", "unet"],
    *,
    n_slices: int,
    image_size: int,
    batch_size: int,
    n_val: int,
    min_val_slices: int,
    steps: int | None = None,
    scale: float = 1.0,
    augmented: bool = False,
) -> SchedulePlan:
    """The schedule of one run (see the module docstring); ``steps`` overrides the rule's length, ``scale``
    multiplies it (a convergence check trains twice as long); ``augmented``: the head trains on augmented views
    (:data:`AUGMENTED_RULES` where one is measured)."""
    if n_slices < 1 or batch_size < 1:
        raise ConfigError(f"need at least one training slice and batch size 1; got {n_slices}, {batch_size}")
    rule = AUGMENTED_RULES.get(method, RULES[method]) if augmented else RULES[method]
    items = n_slices * image_size * image_size if method == "mlp" else n_slices
    rule_steps = min(rule.max_steps, max(rule.min_steps, math.ceil(rule.epochs * items / batch_size)))
    length = steps if steps is not None else max(1, round(rule_steps * scale))
    why = (
        f"{length} steps given"
        if steps is not None
        else f"{length} steps by the {method} rule{' for augmented views' if rule is not RULES[method] else ''} "
        f"({rule.epochs:g} epochs of {items} "
        f"{'labeled pixels' if method == 'mlp' else 'slices'} at batch {batch_size}, within "
        f"{rule.min_steps}..{rule.max_steps}" + (f", x {scale:g}" if scale != 1 else "") + ")"
    )
    if n_val >= min_val_slices:
        val_every = max(1, length // VALIDATIONS_PER_RUN)
        why += f"; validation on {n_val} slices every {val_every} steps, best model kept, early stopping"
    else:
        val_every = 0
        why += (
            f"; no validation ({n_val} validation slices < {min_val_slices}): the whole schedule runs and the "
            f"last model is kept"
        )
    return SchedulePlan(length, min(length, max(10, round(WARMUP_FRACTION * length))), val_every, why)
