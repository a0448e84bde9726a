"""The ranking rule's invariants: never a labeled slice, picks kept apart, spread over scans, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.labeling.ranking import Candidate, rank_slices


def _random_candidates(seed: int, scans: int = 3, n: int = 60, spacing: float = 2.5) -> list[Candidate]:
    rng = np.random.default_rng(seed)
    return [Candidate(f"S{s}", z, 100.0 * s + spacing * z, float(rng.random())) for s in range(scans) for z in range(n)]


def test_docstring_example() -> None:
    cands = [Candidate("A", z, 3.0 * z, s) for z, s in enumerate([1, 5, 4, 1, 1, 3])]
    picks = rank_slices(cands, {"A": [0.0]}, 3, min_distance_mm=4.0)
    assert [(p.candidate.scan, p.candidate.z) for p in picks] == [("A", 2), ("A", 5)]  # z=1 is 3 mm from labeled z=0
    assert picks[0].nearest_labeled_mm == 6.0 and picks[1].scan_rank == 2


@pytest.mark.parametrize("seed", range(5))
def test_never_a_labeled_slice_and_never_closer_than_the_distance(seed: int) -> None:
    cands = _random_candidates(seed)
    labeled = {"S0": [0, 10, 33], "S2": [59]}
    labeled_mm = {s: [100.0 * int(s[1]) + 2.5 * z for z in zs] for s, zs in labeled.items()}
    picks = rank_slices(cands, labeled_mm, 20, min_distance_mm=10.0, seed=seed, labeled_z=labeled)
    assert len(picks) == 20
    for p in picks:
        assert p.candidate.z not in labeled.get(p.candidate.scan, [])
        assert all(abs(p.candidate.position_mm - mm) >= 10.0 for mm in labeled_mm.get(p.candidate.scan, []))
    for a in picks:
        for b in picks:
            if a is not b and a.candidate.scan == b.candidate.scan:
                assert abs(a.candidate.position_mm - b.candidate.position_mm) >= 10.0


def test_labeled_z_is_excluded_even_at_distance_zero() -> None:
    cands = [Candidate("A", z, 3.0 * z, 10.0 - z) for z in range(5)]
    picks = rank_slices(cands, {}, 5, min_distance_mm=0.0, labeled_z={"A": [0, 1]})
    assert [p.candidate.z for p in picks] == [2, 3, 4]


def test_ranking_is_deterministic_for_a_seed_and_ties_follow_it() -> None:
    tied = [Candidate("A", z, 20.0 * z, 1.0) for z in range(30)]
    runs = [[p.candidate.z for p in rank_slices(tied, {}, 6, seed=s)] for s in (0, 0, 1, 2)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2] or runs[0] != runs[3]
    cands = _random_candidates(3)
    assert rank_slices(cands, {}, 10, seed=4) == rank_slices(cands, {}, 10, seed=4)


def test_scan_decay_spreads_picks_over_scans() -> None:
    strong = [Candidate("A", z, 20.0 * z, 1.0 + 0.01 * z) for z in range(10)]  # every A slice beats every B slice
    weak = [Candidate("B", z, 20.0 * z, 0.8) for z in range(10)]
    greedy = rank_slices(strong + weak, {}, 4, scan_decay=1.0)
    spread = rank_slices(strong + weak, {}, 4, scan_decay=0.7)
    assert {p.candidate.scan for p in greedy} == {"A"}
    assert [p.candidate.scan for p in spread] == ["A", "B", "A", "B"]
    assert spread[2].effective == pytest.approx(strong[-2].score * 0.7)


def test_fewer_picks_when_the_distance_leaves_none_and_bad_settings() -> None:
    cands = [Candidate("A", z, 3.0 * z, 1.0) for z in range(10)]  # 27 mm of scan
    assert len(rank_slices(cands, {}, 10, min_distance_mm=15.0)) == 2
    with pytest.raises(ConfigError, match="scan_decay"):
        rank_slices(cands, {}, 1, scan_decay=0.0)
    with pytest.raises(ConfigError, match="score nan"):
        rank_slices([Candidate("A", 0, 0.0, float("nan"))], {}, 1)
