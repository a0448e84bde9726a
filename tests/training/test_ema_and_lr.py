"""EMA is timm's ModelEmaV3 update with the TF decay warm-up, equal to the update runs had before; one warm-up /
cosine rule serves pretraining and fine-tuning, equal to both rules it replaced."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from smp_diffusion_encoder.finetune.schedule import plan_schedule
from smp_diffusion_encoder.training.ema import EMA
from smp_diffusion_encoder.training.lr import warmup_cosine


def _reference_ema(model: nn.Module, decay: float, steps: list[nn.Module]) -> nn.Module:
    """The EMA of 0.2.0.dev0 (before timm's): foreach lerp of the parameters, buffers copied."""
    shadow = copy.deepcopy(model).eval().requires_grad_(False)
    for n, current in enumerate(steps):
        d = min(decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(list(shadow.parameters()), [p.detach() for p in current.parameters()], 1.0 - d)
        for b_ema, b in zip(shadow.buffers(), current.buffers()):
            b_ema.copy_(b)
    return shadow


def test_ema_equals_the_update_runs_always_had() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    ema, start = EMA(model, decay=0.99), copy.deepcopy(model)
    snapshots = []
    for _ in range(25):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        model(torch.randn(2, 1, 8, 8))  # BatchNorm running statistics change: buffers are copied, not averaged
        ema.update(model)
        snapshots.append(copy.deepcopy(model))
    reference = _reference_ema(start, 0.99, snapshots)
    ours = ema.module.state_dict()
    assert ours.keys() == reference.state_dict().keys()
    assert all(torch.equal(ours[k], v) for k, v in reference.state_dict().items())
    state = ema.state_dict()
    assert set(state) == {"decay", "num_updates", "module"} and state["num_updates"] == 25
    again = EMA(model, decay=0.5)
    again.load_state_dict(state)
    assert again.num_updates == 25 and again.decay == 0.99 and again.current_decay() == ema.current_decay()


@pytest.mark.parametrize("steps,n_slices", [(None, 4), (None, 24), (37, 4)])
def test_one_schedule_rule_equals_both_it_replaced(steps: int | None, n_slices: int) -> None:
    plan = plan_schedule(
        "unet", n_slices=n_slices, image_size=128, batch_size=4, n_val=0, min_val_slices=8, steps=steps
    )
    for step in range(plan.steps + 3):
        before = (
            (step + 1) / plan.warmup
            if step < plan.warmup
            else 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - plan.warmup) / max(1, plan.steps - plan.warmup))))
        )
        assert plan.lr_factor(step) == before
    for warmup in (1, 7):  # pretraining's --warmup-steps: linear, then constant
        assert all(warmup_cosine(s, warmup=warmup) == min(1.0, (s + 1) / warmup) for s in range(30))
