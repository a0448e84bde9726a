"""Slice augmentation: identity, shapes/dtypes, label ids, determinism, mildness."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from smp_diffusion_encoder.data.augment import build_augmentation
from smp_diffusion_encoder.errors import ConfigError


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:96, :96]
    mask = np.zeros((96, 96), np.uint8)
    mask[(yy - 40) ** 2 + (xx - 30) ** 2 < 150] = 1  # "liver" on the image's left
    mask[(yy - 60) ** 2 + (xx - 70) ** 2 < 60] = 13  # "left kidney" on the right
    mask[10:14, 46:50] = 7
    image = np.where(mask > 0, 0.4, -0.5).astype(np.float32)
    return image, mask


def test_none_is_identity(pair) -> None:
    image, mask = pair
    out_img, out_mask = build_augmentation("none")(image, mask)
    np.testing.assert_array_equal(out_img, image)
    np.testing.assert_array_equal(out_mask, mask)


@pytest.mark.parametrize("strength", ["light", "default"])
def test_shapes_dtypes_ids_and_range(pair, strength) -> None:
    image, mask = pair
    aug = build_augmentation(strength, seed=0)
    changed = 0
    for _ in range(20):
        out_img, out_mask = aug(image, mask)
        assert out_img.shape == image.shape and out_img.dtype == np.float32
        assert out_mask.shape == mask.shape and out_mask.dtype == np.uint8
        assert set(np.unique(out_mask)) <= set(np.unique(mask))  # nearest: no blended ids
        assert -1.0 <= out_img.min() and out_img.max() <= 1.0
        changed += not np.array_equal(out_img, image)
        # no flip: the organ on the image's left stays on the left
        assert np.argwhere(out_mask == 1)[:, 1].mean() < np.argwhere(out_mask == 13)[:, 1].mean()
        # mild: masks still overlap their original position and stay near their size
        inter = ((out_mask == 1) & (mask == 1)).sum()
        assert inter > 0.4 * (mask == 1).sum()
    assert changed >= 10


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


def test_intensity_jitter_is_small_in_hu(pair) -> None:
    image, mask = pair
    aug = build_augmentation("default", seed=1)
    flat = np.full((64, 64), 0.3, np.float32)  # 0.3 -> 100 HU in the -160..240 window
    for _ in range(20):
        out, _ = aug(flat, np.zeros((64, 64), np.uint8))
        centre = out[24:40, 24:40]
        assert abs(float(np.median(centre)) - 0.3) * 200 < 25  # HU
        assert float(centre.std()) * 200 < 15


def test_rejects_bad_inputs(pair) -> None:
    image, mask = pair
    with pytest.raises(ConfigError, match="strength"):
        build_augmentation("strong")  # type: ignore[arg-type]
    aug = build_augmentation("light", seed=0)
    with pytest.raises(ConfigError, match="float32"):
        aug(image.astype(np.float64), mask)
    with pytest.raises(ConfigError, match="shape"):
        aug(image, mask[:-1])
