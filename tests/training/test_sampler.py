"""The infinite sampler: full passes, rank blocks that tile the single-process batch, exact restart."""

from __future__ import annotations

from itertools import islice

import pytest

from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.training.sampler import InfiniteBatchSampler


def _take(sampler: InfiniteBatchSampler, steps: int) -> list[list[tuple[int, int]]]:
    return list(islice(iter(sampler), steps))


def test_each_pass_is_a_permutation_and_passes_differ() -> None:
    s = InfiniteBatchSampler(10, batch_size=5, seed=3)
    batches = _take(s, 4)
    first, second = [i for b in batches[:2] for i, _ in b], [i for b in batches[2:] for i, _ in b]
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    assert [p for b in batches for _, p in b] == list(range(20))


def test_ranks_tile_the_single_process_batch() -> None:
    single = _take(InfiniteBatchSampler(7, batch_size=4, seed=1), 5)  # crosses pass boundaries
    ranks = [_take(InfiniteBatchSampler(7, batch_size=2, seed=1, rank=r, world_size=2), 5) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == single


def test_restart_at_a_step_continues_the_stream() -> None:
    full = _take(InfiniteBatchSampler(9, batch_size=2, seed=0), 12)
    assert _take(InfiniteBatchSampler(9, batch_size=2, seed=0, start_step=7), 5) == full[7:]
    pos = InfiniteBatchSampler(9, batch_size=2, seed=0).position(7)
    assert pos == {"samples_seen": 14, "epoch": 1, "index": 5, "n": 9, "seed": 0, "global_batch_size": 2}


def test_bad_settings_raise() -> None:
    with pytest.raises(ConfigError):
        InfiniteBatchSampler(0, batch_size=2)
    with pytest.raises(ConfigError):
        InfiniteBatchSampler(4, batch_size=2, rank=2, world_size=2)
