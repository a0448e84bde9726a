"""Pixel batches of the MLP ensemble: class-balanced draws, seeded, read from the native-resolution cache."""

from __future__ import annotations

import torch

from smp_diffusion_encoder.finetune.batches import pixel_batches
from smp_diffusion_encoder.finetune.data import LabeledSlices


def _slices() -> tuple[LabeledSlices, list[torch.Tensor]]:
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[0, :2, :2] = 5  # 4 pixels of organ 5
    labels[1, 10:20, 10:20] = 1  # 100 pixels of organ 1; background is the rest (~95%)
    features = [torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)]
    return LabeledSlices(torch.zeros(2, 1, 32, 32), labels, ("a:0", "a:1")), features


def test_balanced_draws_give_every_present_class_the_same_share() -> None:
    train, features = _slices()
    batch = next(pixel_batches(train, features, 3000, members=2, seed=0, rank=0, sampling="balanced")(0))
    assert batch["pixels"].shape == (2, 3000, 3) and batch["labels"].shape == (2, 3000)
    counts = torch.bincount(batch["labels"].flatten(), minlength=6)[[0, 1, 5]].float() / 6000
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.03)
    uniform = next(pixel_batches(train, features, 3000, members=2, seed=0, rank=0, sampling="uniform")(0))
    assert (uniform["labels"] == 5).float().mean() < 0.01  # uniform draws barely see a 4-pixel organ


def test_draws_are_a_function_of_seed_step_member_and_rank() -> None:
    train, features = _slices()
    a = pixel_batches(train, features, 64, members=3, seed=1, rank=0)
    b = pixel_batches(train, features, 64, members=3, seed=1, rank=0)
    first, second = next(a(5)), next(b(5))
    assert torch.equal(first["labels"], second["labels"]) and torch.equal(first["pixels"], second["pixels"])
    assert not torch.equal(first["labels"][0], first["labels"][1])  # each member its own pixels
    other_rank = next(pixel_batches(train, features, 64, members=3, seed=1, rank=1)(5))
    assert not torch.equal(first["pixels"], other_rank["pixels"])
    # the feature vector of a drawn pixel is the cache's value there (32 px maps: no interpolation)
    labels = train.labels.reshape(-1)
    flat = features[0].permute(0, 2, 3, 1).reshape(-1, 3)
    rows = [int(torch.nonzero((flat == v).all(1))[0]) for v in first["pixels"][0][:10]]
    assert torch.equal(labels[rows], first["labels"][0][:10])
