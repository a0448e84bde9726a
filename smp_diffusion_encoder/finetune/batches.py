"""Training batches of few-shot runs, as functions of the optimizer step alone (exact resume, any world size).

``data(start_step)`` iterators for the :class:`~smp_diffusion_encoder.training.Trainer`:

* :func:`slice_batches`: slices (cached frozen features, or images when features must be computed: a
  trainable encoder) for the probe and smp-decoder steps; augmentation happens before, as a fixed set of
  augmented views per labeled slice (:func:`~smp_diffusion_encoder.finetune.data.augmented_views`) whose frozen
  features are computed once;
* :func:`pixel_batches`: each MLP-ensemble member's own labeled pixels, drawn uniformly (Baranchuk et al.)
  or class-balanced (every class present in the labels equally often: with a few slices, background is
  ~90% of the pixels and small organs a fraction of a percent, so uniform draws barely show them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import torch

from smp_diffusion_encoder.finetune.data import LabeledSlices
from smp_diffusion_encoder.heads import sample_pixels
from smp_diffusion_encoder.training import InfiniteBatchSampler

Batches = Callable[[int], Iterator[dict[str, Any]]]


def _generator(*key: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


def pixel_batches(
    train: LabeledSlices,
    features: list[torch.Tensor],
    pixels: int,
    members: int,
    seed: int,
    rank: int,
    sampling: Literal["balanced", "uniform"] = "balanced",
) -> Batches:
    """``data(start_step)`` for :class:`~smp_diffusion_encoder.finetune.steps.MLPStep`.

    Pixel draws are a function of ``(seed, step, member, rank)`` only; their feature vectors are read from
    the native-resolution cache with :func:`~smp_diffusion_encoder.heads.sample_pixels` (bit-for-bit the
    upsampled stack's values, never materialized). ``balanced``: a class is drawn uniformly among the classes
    present in the training labels, then one of its pixels uniformly.
    """
    n, h, w = train.labels.shape
    flat = train.labels.reshape(-1)
    order = torch.argsort(flat, stable=True)  # pixel indices grouped by class
    classes, counts = torch.unique(flat, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts

    def draw(g: torch.Generator) -> torch.Tensor:
        if sampling == "uniform":
            return torch.randint(n * h * w, (pixels,), generator=g)
        which = torch.randint(len(classes), (pixels,), generator=g)
        offset = (torch.rand(pixels, generator=g) * counts[which]).long().clamp_max(counts[which] - 1)
        return order[starts[which] + offset]

    def data(start_step: int) -> Iterator[dict[str, Any]]:
        at = start_step
        while True:
            vecs, labs = [], []
            for k in range(members):
                index = draw(_generator(seed, at, k, rank))
                b, ys, xs = index // (h * w), (index // w) % h, index % w
                vecs.append(sample_pixels(features, (h, w), b, ys, xs))
                labs.append(train.labels[b, ys, xs])
            yield {"labels": torch.stack(labs), "pixels": torch.stack(vecs), "step": at}
            at += 1

    return data


def slice_batches(
    train: LabeledSlices,
    features: list[torch.Tensor] | None,
    batch_size: int,
    seed: int,
    rank: int,
    world: int,
    *,
    needs_image: bool,
    unfreeze_at: int | None,
) -> Batches:
    """``data(start_step)`` for the probe and decoder steps: batch contents depend only on the step.

    Cached features are used while the encoder is frozen; images when it trains (``needs_image`` adds them
    to every batch, for an encoder that unfreezes later).
    """

    def data(start_step: int) -> Iterator[dict[str, Any]]:
        per_rank = min(batch_size, max(1, len(train) // world))
        sampler = InfiniteBatchSampler(
            len(train), per_rank, seed=seed, start_step=start_step, rank=rank, world_size=world
        )
        for at, items in enumerate(sampler, start=start_step):
            idx = [i for i, _ in items]
            batch: dict[str, Any] = {"labels": train.labels[idx], "step": at}
            use_cache = features is not None and not (unfreeze_at is not None and at >= unfreeze_at)
            if use_cache:
                batch["features"] = [f[idx] for f in features]
            if needs_image or not use_cache:
                batch["image"] = train.images[idx]
            yield batch

    return data
