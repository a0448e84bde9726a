"""Which slices to label next: greedy picks by uncertainty, kept apart along z and spread over scans.

The rule (:func:`rank_slices`), on candidate slices that each carry an uncertainty ``score``:

1. A slice already labeled is never a candidate, nor is any slice within ``min_distance_mm`` (along the scan's
   z axis, slice centre to slice centre) of a labeled slice of the same scan: its neighbours look alike, and
   labeling one next to a labeled one teaches the model little.
2. Picks are made one at a time. Each candidate's effective score is ``score * scan_decay ** k``, ``k`` the
   picks already taken from its scan; the highest is taken (ties: a seeded order), and every candidate of that
   scan within ``min_distance_mm`` of it is dropped. So no two picks of a scan are closer than
   ``min_distance_mm``, and a scan must be ``1 / scan_decay`` times as uncertain as another to give its next
   pick before the other gives one (``scan_decay=1``: no spreading over scans).
3. When every candidate has been picked or dropped, fewer than ``n`` come back.

Pure numpy on plain records: no model, no files (:mod:`~smp_diffusion_encoder.labeling.suggest` computes the
scores).

Example:
    >>> cands = [Candidate("A", z, 3.0 * z, s) for z, s in enumerate([1, 5, 4, 1, 1, 3])]  # 3 mm slices
    >>> [p.candidate.z for p in rank_slices(cands, {"A": [0.0]}, 3, min_distance_mm=4.0)]  # z=0 is labeled
    [2, 5]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from smp_diffusion_encoder.errors import ConfigError


@dataclass(frozen=True)
class Candidate:
    """An unlabeled axial slice: ``scan`` id, canonical index ``z``, ``position_mm`` along z, uncertainty
    ``score`` (higher: label it sooner)."""

    scan: str
    z: int
    position_mm: float
    score: float


@dataclass(frozen=True)
class Pick:
    """A chosen slice: its ``rank`` (1 = first), ``effective`` score (after the scan decay), ``scan_rank``
    (1 = the first pick of its scan) and ``nearest_labeled_mm`` (distance to the scan's nearest labeled slice;
    ``None`` when the scan has none)."""

    candidate: Candidate
    rank: int
    effective: float
    scan_rank: int
    nearest_labeled_mm: float | None


def rank_slices(
    candidates: Sequence[Candidate],
    labeled_mm: Mapping[str, Sequence[float]],
    n: int,
    *,
    min_distance_mm: float = 10.0,
    scan_decay: float = 0.7,
    seed: int = 0,
    labeled_z: Mapping[str, Sequence[int]] | None = None,
) -> list[Pick]:
    """Up to ``n`` picks from ``candidates`` by the rule of the module docstring.

    Args:
        labeled_mm: ``{scan: positions (mm) of its labeled slices}``.
        labeled_z: ``{scan: labeled z}``: these are never picked whatever the distance (a safety net beside
            ``labeled_mm``; both may be given).
        seed: orders candidates of equal effective score.

    Raises:
        ConfigError: ``n < 0``, ``min_distance_mm < 0`` or ``scan_decay`` outside (0, 1].
    """
    if n < 0 or min_distance_mm < 0 or not 0 < scan_decay <= 1:
        raise ConfigError(
            f"rank_slices: need n >= 0, min_distance_mm >= 0 and 0 < scan_decay <= 1; got n={n}, "
            f"min_distance_mm={min_distance_mm}, scan_decay={scan_decay}"
        )
    taken_z = {s: {int(z) for z in zs} for s, zs in (labeled_z or {}).items()}
    labeled = {s: np.asarray(list(mm), dtype=np.float64) for s, mm in labeled_mm.items()}
    tiebreak = np.random.default_rng(seed).permutation(len(candidates))
    alive = []
    for i, c in enumerate(candidates):
        if not np.isfinite(c.score):
            raise ConfigError(f"rank_slices: candidate {c.scan} z={c.z} has score {c.score}")
        near = labeled.get(c.scan, np.empty(0))
        if c.z in taken_z.get(c.scan, ()) or (near.size and np.abs(near - c.position_mm).min() < min_distance_mm):
            continue
        alive.append(i)
    picks: list[Pick] = []
    per_scan: dict[str, int] = {}
    while alive and len(picks) < n:
        effective = [candidates[i].score * scan_decay ** per_scan.get(candidates[i].scan, 0) for i in alive]
        best = max(range(len(alive)), key=lambda j: (effective[j], -tiebreak[alive[j]]))
        chosen = candidates[alive[best]]
        per_scan[chosen.scan] = per_scan.get(chosen.scan, 0) + 1
        near = labeled.get(chosen.scan, np.empty(0))
        picks.append(
            Pick(
                chosen,
                len(picks) + 1,
                float(effective[best]),
                per_scan[chosen.scan],
                float(np.abs(near - chosen.position_mm).min()) if near.size else None,
            )
        )
        alive = [
            i
            for i in alive
            if candidates[i].scan != chosen.scan
            or abs(candidates[i].position_mm - chosen.position_mm) >= min_distance_mm
            and candidates[i].z != chosen.z
        ]
    return picks
