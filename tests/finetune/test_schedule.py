"""The schedule rule: length from the labeled data and the head, warm-up + cosine decay, when to validate."""

from __future__ import annotations

import math

import pytest

from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.finetune.schedule import RULES, plan_schedule


@pytest.mark.parametrize(
    ("method", "n", "batch", "steps"),
    [
        ("unet", 4, 4, 250),  # a handful of slices: the minimum (250 passes over them)
        ("unet", 24, 4, 960),  # 160 epochs of 6 steps
        ("unet", 100, 4, 4000),  # 160 epochs of 25 steps
        ("unet", 3000, 4, 5000),  # capped
        ("probe", 4, 4, 1000),
        ("probe", 100, 4, 5000),
        ("mlp", 4, 2048, 1000),  # labeled pixels: 2 epochs of 4 x 128 x 128 pixels = 64 steps -> the minimum
        ("mlp", 300, 2048, 4800),
    ],
)
def test_length_follows_the_labeled_data(method: str, n: int, batch: int, steps: int) -> None:
    plan = plan_schedule(method, n_slices=n, image_size=128, batch_size=batch, n_val=0, min_val_slices=8)
    assert plan.steps == steps and f"{steps} steps by the {method} rule" in plan.reason
    rule = RULES[method]
    assert rule.min_steps <= plan.steps <= rule.max_steps


def test_more_labels_never_train_less() -> None:
    for method in RULES:
        lengths = [
            plan_schedule(method, n_slices=n, image_size=128, batch_size=4, n_val=0, min_val_slices=8).steps
            for n in (1, 4, 8, 16, 32, 64, 128, 256, 512)
        ]
        assert lengths == sorted(lengths)


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    plan = plan_schedule("unet", n_slices=24, image_size=128, batch_size=4, n_val=0, min_val_slices=8)
    assert plan.steps == 960 and plan.warmup == 48
    factors = [plan.lr_factor(s) for s in range(plan.steps)]
    assert factors[0] == pytest.approx(1 / 48) and factors[47] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[48:], factors[49:]))  # monotone decay after the warm-up
    assert factors[-1] < 1e-4 and plan.lr_factor(48 + (plan.steps - 48) // 2) == pytest.approx(0.5, abs=0.01)
    assert math.isclose(plan.lr_factor(10 * plan.steps), 0.0, abs_tol=1e-12)


def test_validation_only_with_enough_slices() -> None:
    few = plan_schedule("unet", n_slices=4, image_size=128, batch_size=4, n_val=7, min_val_slices=8)
    enough = plan_schedule("unet", n_slices=4, image_size=128, batch_size=4, n_val=8, min_val_slices=8)
    assert few.val_every == 0 and "no validation (7 validation slices < 8)" in few.reason
    assert enough.val_every == 25 and "early stopping" in enough.reason
    given = plan_schedule("probe", n_slices=4, image_size=128, batch_size=4, n_val=0, min_val_slices=8, steps=7)
    assert given.steps == 7 and given.warmup == 7 and "7 steps given" in given.reason
    with pytest.raises(ConfigError):
        plan_schedule("unet", n_slices=0, image_size=128, batch_size=4, n_val=0, min_val_slices=8)


def test_augmented_views_double_the_decoders_rule_only() -> None:
    kw = dict(image_size=128, batch_size=4, n_val=0, min_val_slices=8)
    assert plan_schedule("unet", n_slices=4, augmented=True, **kw).steps == 500  # min steps 500
    assert plan_schedule("unet", n_slices=16, augmented=True, **kw).steps == 1280  # 320 epochs of 16 at batch 4
    assert plan_schedule("unet", n_slices=16, **kw).steps == 640
    assert "augmented views" in plan_schedule("unet", n_slices=4, augmented=True, **kw).reason
    for method in ("probe", "mlp"):  # no measurement for these heads: their rule stays
        assert plan_schedule(method, n_slices=4, augmented=True, **kw) == plan_schedule(method, n_slices=4, **kw)
