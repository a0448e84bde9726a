"""Volume ratios and confusion tables: over-segmentation and swapped organs at a glance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smp_diffusion_encoder.evaluation.confusion import (
    CLASS_NAMES,
    confusion_matrix,
    confusion_shares,
    format_confusion_markdown,
    summed_confusion,
    volume_ratios,
)


def maps() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((2, 10, 10), np.uint8)
    gt[:, :5, :5] = 1  # liver, 50 voxels
    gt[:, 6:8, 6:8] = 2  # right kidney, 8 voxels
    gt[:, 8:10, 0:2] = 13  # left kidney, 8 voxels
    pred = gt.copy()
    pred[:, 6:8, 6:8] = 1  # the kidney swallowed by the liver
    pred[:, 8:10, 0:2] = 3  # the left kidney read as spleen
    pred[:, :5, 5] = 1  # and the liver a little too large
    return gt, pred


def test_volume_ratios_show_over_segmentation_and_absence() -> None:
    gt, pred = maps()
    ratios = volume_ratios(gt, pred)
    assert ratios["Liver"] == pytest.approx((50 + 8 + 10) / 50)
    assert ratios["RK"] == 0.0 and ratios["LK"] == 0.0
    assert math.isnan(ratios["Spleen"])  # no true spleen: no ratio
    assert list(ratios) == list(CLASS_NAMES[1:])


def test_confusion_counts_shares_and_table() -> None:
    gt, pred = maps()
    counts = confusion_matrix(gt, pred)
    assert counts.shape == (14, 14) and counts.sum() == gt.size
    assert counts[2, 1] == 8 and counts[13, 3] == 8 and counts[1, 1] == 50
    shares = confusion_shares(counts)
    assert set(shares) == {"Liver", "RK", "LK"}
    assert shares["RK"]["Liver"] == 1.0 and shares["LK"]["Spleen"] == 1.0
    assert all(sum(row.values()) == pytest.approx(1.0) for row in shares.values())
    table = format_confusion_markdown(counts, title="REALCT")
    assert "| RK | 0.00 | Liver 100% |" in table and "| Liver | 1.36 | **Liver 100%** |" in table
    np.testing.assert_array_equal(summed_confusion([counts, counts]), 2 * counts)


def test_bad_inputs_are_refused() -> None:
    gt, pred = maps()
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(gt, pred[:1])
    with pytest.raises(ValueError, match="ids must lie"):
        confusion_matrix(gt, np.full_like(pred, 20))
    with pytest.raises(ValueError):
        summed_confusion([])
