"""Slice augmentation: identity, shapes/dtypes, label ids, no flips, determinism, contrast phases, strengths."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from smp_diffusion_encoder.data.augment import STRENGTHS, build_augmentation
from smp_diffusion_encoder.errors import ConfigError

WINDOW = (-160.0, 240.0)


def to_window(hu: float) -> float:
    return (hu - WINDOW[0]) / 200.0 - 1.0


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:96, :96]
    mask = np.zeros((96, 96), np.uint8)
    mask[(yy - 40) ** 2 + (xx - 30) ** 2 < 150] = 1  # "liver" on the image's left
    mask[(yy - 60) ** 2 + (xx - 70) ** 2 < 60] = 13  # "left kidney" on the right
    mask[10:14, 46:50] = 7
    image = np.full((96, 96), to_window(-100.0), np.float32)  # fat
    image[mask == 1] = to_window(45.0)  # non-contrast liver
    image[mask == 13] = to_window(30.0)  # non-contrast kidney
    image[mask == 7] = to_window(20.0)
    return image, mask


def test_none_is_identity(pair) -> None:
    image, mask = pair
    out_img, out_mask = build_augmentation("none")(image, mask)
    np.testing.assert_array_equal(out_img, image)
    np.testing.assert_array_equal(out_mask, mask)


@pytest.mark.parametrize("strength", [s for s in STRENGTHS if s != "none"])
def test_shapes_dtypes_ids_range_and_no_flip(pair, strength) -> None:
    image, mask = pair
    aug = build_augmentation(strength, seed=0)
    changed = 0
    for _ in range(30):
        out_img, out_mask = aug(image, mask)
        assert out_img.shape == image.shape and out_img.dtype == np.float32
        assert out_mask.shape == mask.shape and out_mask.dtype == np.uint8
        assert set(np.unique(out_mask)) <= set(np.unique(mask))  # nearest: no blended ids
        assert -1.0 <= out_img.min() and out_img.max() <= 1.0
        changed += not np.array_equal(out_img, image)
        # no flip: the organ on the image's left stays on the left
        assert np.argwhere(out_mask == 1)[:, 1].mean() < np.argwhere(out_mask == 13)[:, 1].mean()
        # the liver keeps overlapping its original place (rotation <= 15 degrees, scale 0.7-1.4)
        inter = ((out_mask == 1) & (mask == 1)).sum()
        assert inter > 0.3 * (mask == 1).sum()
    assert changed >= 20


def test_contrast_phases_brighten_a_non_contrast_kidney_within_its_range(pair) -> None:
    image, mask = pair
    aug = build_augmentation("contrast", seed=3)
    kidney = []
    for _ in range(40):
        out, out_mask = aug(image, mask)
        np.testing.assert_array_equal(out_mask, mask)  # contrast phases never move anything
        hu = WINDOW[0] + (out[(mask == 13)] + 1.0) * 200.0
        kidney.append(float(np.median(hu)))
        fat = out[:4, :4]  # far from every organ: untouched
        np.testing.assert_array_equal(fat, image[:4, :4])
    kidney = np.array(kidney)
    assert kidney.min() >= 30.0 - 1e-3 and kidney.max() <= 240.0  # the window's top clips the cortex
    assert kidney.max() > 150.0 and kidney.min() < 80.0  # non-contrast through enhanced


def test_seeded_determinism_and_reseed(pair) -> None:
    image, mask = pair
    a, b = build_augmentation("default", seed=5), build_augmentation("default", seed=5)
    runs_a = [a(image, mask) for _ in range(4)]
    runs_b = [b(image, mask) for _ in range(4)]
    for (ia, ma), (ib, mb) in zip(runs_a, runs_b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)
    a.reseed(5)
    np.testing.assert_array_equal(a(image, mask)[0], runs_a[0][0])
    c = build_augmentation("default", seed=6)
    assert any(not np.array_equal(c(image, mask)[0], r[0]) for r in runs_a)
    clone = pickle.loads(pickle.dumps(build_augmentation("default", seed=5)))
    np.testing.assert_array_equal(clone(image, mask)[0], runs_a[0][0])


def test_intensity_set_keeps_tissue_near_its_hu() -> None:
    aug = build_augmentation("spatial-intensity", seed=1)
    flat = np.full((64, 64), to_window(100.0), np.float32)
    medians = []
    for _ in range(40):
        out, _ = aug(flat, np.zeros((64, 64), np.uint8))
        medians.append(float(np.median(out[24:40, 24:40])))
    shift_hu = np.abs(np.array(medians) - to_window(100.0)) * 200.0
    assert np.median(shift_hu) < 5.0  # most views keep the tissue's HU (each transform has p <= 0.3)
    assert shift_hu.max() < 120.0


def test_rejects_bad_inputs(pair) -> None:
    image, mask = pair
    with pytest.raises(ConfigError, match="strength"):
        build_augmentation("light")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="hu_window"):
        build_augmentation("default", hu_window=(100.0, 100.0))
    aug = build_augmentation("default", seed=0)
    with pytest.raises(ConfigError, match="float32"):
        aug(image.astype(np.float64), mask)
    with pytest.raises(ConfigError, match="shape"):
        aug(image, mask[:-1])


def test_organs_default_is_the_mask_s_organs(pair) -> None:
    image, mask = pair
    aug = build_augmentation("default", seed=0)
    for seed in range(5):
        aug.reseed(seed)
        plain = aug(image, mask)
        aug.reseed(seed)
        given = aug(image, mask, organs=np.unique(mask).tolist())
        np.testing.assert_array_equal(plain[0], given[0])
        np.testing.assert_array_equal(plain[1], given[1])


def test_slices_of_a_stack_share_the_transform_when_given_the_same_organs(pair) -> None:
    """Two slices whose masks hold different organs: with the union as ``organs`` every draw is the same, so a
    region both hold moves the same way; without it the extra organ shifts the stream and the transforms differ."""
    image, mask = pair
    other = mask.copy()
    other[other == other.max()] = 0  # the second slice lacks one organ
    shared = int(np.unique(other)[1])
    union = np.unique(mask).tolist()
    aug = build_augmentation("default")
    same, differ = [], []
    for seed in range(30):
        out = []
        for m, organs in ((mask, union), (other, union), (mask, None), (other, None)):
            aug.reseed(seed)
            out.append(aug(image, m, organs=organs)[1] == shared)
        same.append(np.array_equal(out[0], out[1]))
        differ.append(not np.array_equal(out[2], out[3]))
    assert all(same)
    assert any(differ)  # spatial transforms drawn after the contrast phase: the stream matters
