"""Contrast-phase simulation: ranges, direction, what is left alone."""

from __future__ import annotations

import numpy as np
import pytest

from smp_diffusion_encoder.data.enhancement import ENHANCEMENT, TISSUE_HU, simulate_enhancement


def slice_with(organ: int, hu: float, *, gas: bool = False) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((48, 48), -100.0, np.float32)
    labels = np.zeros((48, 48), np.uint8)
    image[12:36, 12:36], labels[12:36, 12:36] = hu, organ
    if gas:
        image[20:28, 20:28] = -900.0  # gas inside the labeled organ (a bowel label's lumen)
    return image, labels


@pytest.mark.parametrize("organ", sorted(ENHANCEMENT))
def test_non_contrast_organs_move_up_within_their_peak(organ: int) -> None:
    behaviour = ENHANCEMENT[organ]
    image, labels = slice_with(organ, behaviour.baseline)
    rng = np.random.default_rng(organ)
    centres = [float(np.median(simulate_enhancement(image, labels, rng)[18:30, 18:30])) for _ in range(60)]
    assert min(centres) >= behaviour.baseline - 1e-3
    assert max(centres) <= behaviour.baseline + behaviour.peak + 1e-3
    if behaviour.peak > 0:
        assert max(centres) - min(centres) > 0.5 * behaviour.peak  # the draws span most of the range


def test_an_enhanced_organ_can_be_shown_without_contrast() -> None:
    kidney = ENHANCEMENT[2]
    image, labels = slice_with(2, kidney.baseline + 180.0)  # a nephrographic-phase kidney
    rng = np.random.default_rng(0)
    centres = [float(np.median(simulate_enhancement(image, labels, rng)[18:30, 18:30])) for _ in range(60)]
    assert min(centres) < kidney.baseline + 40.0  # back near its unenhanced value
    assert max(centres) <= kidney.baseline + kidney.peak + 1e-3


def test_gas_unlabeled_voxels_and_unknown_ids_are_left_alone() -> None:
    image, labels = slice_with(11, 35.0, gas=True)  # stomach with gas inside
    labels[40:44, 40:44] = 42  # an id with no enhancement row
    image[40:44, 40:44] = 20.0
    rng = np.random.default_rng(1)
    for _ in range(10):
        out = simulate_enhancement(image, labels, rng)
        np.testing.assert_array_equal(out[20:28, 20:28], image[20:28, 20:28])  # gas: outside TISSUE_HU
        np.testing.assert_array_equal(out[:8, :8], image[:8, :8])  # far from the organ
        np.testing.assert_array_equal(out[40:44, 40:44], image[40:44, 40:44])
    assert TISSUE_HU[0] > -900.0


def test_deterministic_for_a_generator_state_and_checks_shapes() -> None:
    image, labels = slice_with(1, 50.0)
    a = simulate_enhancement(image, labels, np.random.default_rng(7))
    b = simulate_enhancement(image, labels, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="one shape"):
        simulate_enhancement(image, labels[:-1], np.random.default_rng(0))
