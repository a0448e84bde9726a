"""Surfel-based surface distances: lookup table, analytic areas, distances vs brute force, NSD cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from smp_diffusion_encoder.evaluation.surface import (
    NEIGHBOUR_CODE_KERNEL,
    compute_surface_distances,
    dice_coefficient,
    normalized_surface_dice,
    surfel_area_table,
)


def _box(shape: tuple[int, int, int], lo: tuple[int, int, int], hi: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return mask


def test_table_basic_codes() -> None:
    table = surfel_area_table((1.0, 1.0, 1.0))
    assert table.shape == (256,)
    assert table[0] == 0 and table[255] == 0
    corner = math.sqrt(3) / 8  # one inside voxel: a corner triangle
    assert table[1] == pytest.approx(corner) and table[128] == pytest.approx(corner)
    assert table[15] == pytest.approx(1.0)  # half the cube inside: a unit square
    # complement configurations bound the same surface
    np.testing.assert_allclose(table, table[::-1])


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.8, 2.5), (3.0, 1.0, 0.5)])
def test_box_surface_area_is_analytic(spacing: tuple[float, float, float]) -> None:
    n0, n1, n2 = 5, 4, 3
    s0, s1, s2 = spacing
    mask = _box((9, 9, 9), (2, 3, 1), (2 + n0, 3 + n1, 1 + n2))
    faces = 2 * ((n1 - 1) * (n2 - 1) * s1 * s2 + (n0 - 1) * (n2 - 1) * s0 * s2 + (n0 - 1) * (n1 - 1) * s0 * s1)
    edges = 2 * (
        (n2 - 1) * s2 * math.hypot(s0, s1) + (n1 - 1) * s1 * math.hypot(s0, s2) + (n0 - 1) * s0 * math.hypot(s1, s2)
    )
    corners = math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2)
    areas = compute_surface_distances(mask, mask, spacing).surfel_areas_gt
    assert areas.sum() == pytest.approx(faces + edges + corners, rel=1e-12)


def _brute_force(gt: np.ndarray, pred: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Border corner points by explicit correlation and nearest distances by all-pairs search."""

    def border_points(mask: np.ndarray) -> np.ndarray:
        padded = np.zeros(tuple(n + 1 for n in mask.shape), np.uint8)
        padded[:-1, :-1, :-1] = mask
        codes = ndimage.correlate(padded, NEIGHBOUR_CODE_KERNEL.astype(np.int64), mode="constant", cval=0)
        return np.argwhere((codes != 0) & (codes != 255)) * spacing

    a, b = border_points(gt), border_points(pred)
    d = cdist(a, b)
    return np.sort(d.min(axis=1)), np.sort(d.min(axis=0))


def test_distances_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    spacing = np.array([0.8, 1.1, 2.5])
    for _ in range(5):
        gt = ndimage.binary_opening(rng.random((10, 11, 9)) > 0.45)
        pred = ndimage.binary_opening(rng.random((10, 11, 9)) > 0.5)
        # both masks live in the same grid: embed in a zero margin so cropping cannot matter
        gt, pred = np.pad(gt, 2), np.pad(pred, 2)
        sd = compute_surface_distances(gt, pred, spacing)
        ref_gt, ref_pred = _brute_force(gt, pred, spacing)
        np.testing.assert_allclose(sd.distances_gt_to_pred, ref_gt, atol=1e-9)
        np.testing.assert_allclose(sd.distances_pred_to_gt, ref_pred, atol=1e-9)
        assert np.all(np.diff(sd.distances_gt_to_pred) >= 0)


def test_identical_masks() -> None:
    mask = _box((10, 10, 10), (2, 2, 2), (7, 8, 6))
    assert normalized_surface_dice(mask, mask, (0.7, 0.7, 3.0), 0.0) == 1.0
    assert dice_coefficient(mask, mask) == 1.0


def test_empty_masks_follow_reference() -> None:
    mask = _box((8, 8, 8), (2, 2, 2), (5, 5, 5))
    empty = np.zeros_like(mask)
    sd = compute_surface_distances(mask, empty, (1.0, 1.0, 1.0))
    assert np.all(np.isinf(sd.distances_gt_to_pred)) and sd.distances_pred_to_gt.size == 0
    assert normalized_surface_dice(mask, empty, (1.0, 1.0, 1.0), 5.0) == 0.0
    assert normalized_surface_dice(empty, mask, (1.0, 1.0, 1.0), 5.0) == 0.0
    both = compute_surface_distances(empty, empty, (1.0, 1.0, 1.0))
    assert both.surfel_areas_gt.size == both.surfel_areas_pred.size == 0
    assert math.isnan(normalized_surface_dice(empty, empty, (1.0, 1.0, 1.0), 1.0))
    assert math.isnan(dice_coefficient(empty, empty))


def test_disjoint_far_apart() -> None:
    gt = _box((30, 8, 8), (1, 2, 2), (5, 6, 6))
    pred = _box((30, 8, 8), (20, 2, 2), (25, 6, 6))
    assert dice_coefficient(gt, pred) == 0.0
    assert normalized_surface_dice(gt, pred, (1.0, 1.0, 1.0), 3.0) == 0.0


def test_one_voxel_shift_dice_and_nsd() -> None:
    n = 6
    gt = _box((12, 12, 12), (2, 3, 3), (2 + n, 3 + n, 3 + n))
    pred = np.roll(gt, 1, axis=0)  # shifted by one voxel along axis 0
    assert dice_coefficient(gt, pred) == pytest.approx((n - 1) / n, abs=1e-15)
    # every surfel moves by exactly one voxel along axis 0: tolerance >= that step gives 1
    assert normalized_surface_dice(gt, pred, (2.0, 1.0, 1.0), 2.0) == 1.0
    # anisotropic spacing matters: a 2 mm step is outside 1.5 mm, a 1 mm step inside
    assert normalized_surface_dice(gt, pred, (2.0, 1.0, 1.0), 1.5) < 0.95
    assert normalized_surface_dice(gt, pred, (1.0, 2.0, 2.0), 1.5) == 1.0


def test_input_validation() -> None:
    mask = np.zeros((4, 4, 4), bool)
    with pytest.raises(ValueError, match="equal shape"):
        compute_surface_distances(mask, np.zeros((4, 4, 5), bool), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing_mm"):
        compute_surface_distances(mask, mask, (1, 1))
    with pytest.raises(ValueError, match="spacing_mm"):
        surfel_area_table((1.0, 0.0, 1.0))
