"""An endless, seeded, exactly resumable stream of training samples, split across ranks.

The **global stream** is ``perm_0 ++ perm_1 ++ ...`` where ``perm_e`` is a permutation of the dataset's
``n`` indices drawn from ``numpy.random.default_rng([seed, e])``. Optimizer step ``s`` consumes stream
positions ``[s * G, (s + 1) * G)`` with ``G = batch_size * world_size`` (the global batch); rank ``r`` takes
the contiguous block ``[s * G + r * B, s * G + (r + 1) * B)``. Hence:

- the data position of a run is just its step count (``samples_seen = step * G``), so resuming needs no
  sampler state beyond ``(seed, n, G)``, and a prefetching ``DataLoader`` cannot desynchronize it;
- the ranks' batches concatenated in rank order are exactly the batch a single process with batch ``G``
  sees, so a checkpoint written at any world size continues at any other world size with the same ``G``;
- every sample carries its stream position, from which the training step derives its own randomness
  (noise, timestep), making that independent of world size and of interruptions as well.

The batches come from a ``DataLoader(PositionedDataset(store), batch_sampler=sampler)`` or, with the whole
store held on the training device, from :func:`device_batches`: the same samples, no host copies.

Example:
    >>> s = InfiniteBatchSampler(10, batch_size=2, seed=0, rank=1, world_size=2)
    >>> [p for _, p in next(iter(s))]
    [2, 3]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from smp_diffusion_encoder.errors import ConfigError


class InfiniteBatchSampler:
    """Batch sampler for ``DataLoader(batch_sampler=...)``: yields lists of ``(index, stream_position)``.

    Args:
        n: dataset length (> 0).
        batch_size: samples per rank and step (``B``).
        seed: shuffling seed.
        rank, world_size: this process's place in a data-parallel group.
        start_step: first optimizer step to produce batches for (``> 0`` when resuming).
    """

    def __init__(
        self, n: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1, start_step: int = 0
    ) -> None:
        if n < 1 or batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or start_step < 0:
            raise ConfigError(
                f"bad sampler settings: n={n}, batch_size={batch_size}, rank={rank}, "
                f"world_size={world_size}, start_step={start_step}"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self._epoch, self._perm = -1, np.empty(0, np.int64)

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def permutation(self, epoch: int) -> np.ndarray:
        """``perm_epoch``: the order of the dataset in pass ``epoch`` of the stream, ``(n,)`` int64."""
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perm

    def index_at(self, position: int) -> int:
        """Dataset index at global stream ``position``."""
        return int(self.permutation(position // self.n)[position % self.n])

    def position(self, step: int) -> dict[str, int]:
        """Data position after ``step`` optimizer steps (stored in checkpoints; world-size independent)."""
        seen = step * self.global_batch_size
        return {
            "samples_seen": seen,
            "epoch": seen // self.n,
            "index": seen % self.n,
            "n": self.n,
            "seed": self.seed,
            "global_batch_size": self.global_batch_size,
        }

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            lo = step * self.global_batch_size + self.rank * self.batch_size
            yield [(self.index_at(p), p) for p in range(lo, lo + self.batch_size)]
            step += 1

    def state_dict(self) -> dict[str, Any]:
        return self.position(self.start_step)


class PositionedDataset(Dataset):
    """Wraps a dataset of tensors so item ``(index, position)`` is ``(dataset[index], position)``.

    With the default collate a batch is ``(x: (B, ...) float, positions: (B,) int64)``.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, position = item
        return self.dataset[index], position


def device_batches(
    data: torch.Tensor, sampler: Iterable[list[tuple[int, int]]]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(x (B, ...) float32, positions (B,) int64)`` indexed from ``data`` on its own device (e.g. a
    store's :meth:`~smp_diffusion_encoder.data.slice_store.SliceStore.load_all` moved to the GPU once): the
    same values and positions as a ``DataLoader`` over :class:`PositionedDataset` with ``sampler``. Only the
    indices travel (pinned, asynchronously); nothing waits for the device.

    Example:
        >>> data = torch.arange(6.0).reshape(6, 1)
        >>> x, pos = next(device_batches(data, InfiniteBatchSampler(6, 2, seed=0)))
        >>> x.shape, pos.dtype
        (torch.Size([2, 1]), torch.int64)
    """
    pin = data.device.type == "cuda"
    for batch in sampler:
        pairs = torch.tensor(batch, dtype=torch.long)  # (B, 2): index, position
        if pin:
            pairs = pairs.pin_memory()
        pairs = pairs.to(data.device, non_blocking=True)
        yield data[pairs[:, 0]].float(), pairs[:, 1]
