"""HU windowing, slice resizing and the exact inverse back to the reference grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic_volumes import synthetic_ct, synthetic_labels, write_nifti

from smp_diffusion_encoder.data.preprocess import (
    PreprocessConfig,
    labels_to_model_slices,
    model_slices_to_volume,
    resize_image_slices,
    resize_label_slices,
    volume_to_model_slices,
    window_hu,
)
from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.errors import ConfigError


def test_config_round_trips_through_json() -> None:
    cfg = PreprocessConfig(hu_window=(-200, 300), image_size=128)
    assert PreprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.to_dict() == {"hu_window": [-200.0, 300.0], "image_size": 128}
    assert PreprocessConfig.from_dict({}) == PreprocessConfig()


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"hu_window": [0, 1], "size": 3}, r"unknown preprocessing keys \['size'\]"),
        ({"hu_window": [240, -160]}, "low < high"),
        ({"hu_window": [1]}, r"hu_window must be \[low, high\]"),
        ({"image_size": 4}, "image_size must be an integer >= 8"),
        ({"image_size": 64.0}, "image_size must be an integer"),
    ],
)
def test_config_rejects_bad_values(bad: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PreprocessConfig.from_dict(bad)


def test_window_maps_the_window_onto_minus_one_one() -> None:
    out = window_hu(np.array([-1000, -160, 40, 240, 3000]), PreprocessConfig())
    np.testing.assert_allclose(out, [-1, -1, 0, 1, 1], atol=1e-6)
    assert out.dtype == np.float32


def test_resize_image_is_smooth_and_preserves_constants() -> None:
    x = np.zeros((2, 64, 64), np.float32)
    x[:, ::2] = 1.0  # stripes alias badly without anti-aliasing
    down = resize_image_slices(x, 16)
    assert down.shape == (2, 16, 16) and down.dtype == np.float32
    np.testing.assert_allclose(down, 0.5, atol=1e-6)
    np.testing.assert_allclose(resize_image_slices(np.full((1, 5, 7), 0.3), 9), 0.3, atol=1e-6)


def test_resize_labels_is_nearest_and_keeps_dtype() -> None:
    y = np.arange(16, dtype=np.uint16).reshape(1, 4, 4)
    up = resize_label_slices(y, 8)
    assert up.dtype == np.uint16 and set(np.unique(up)) == set(range(16))
    np.testing.assert_array_equal(up[0, ::2, ::2], y[0])
    np.testing.assert_array_equal(resize_label_slices(up, 4), y)


@pytest.mark.parametrize("file_shape", [(24, 20, 8), (20, 24, 8), (16, 16, 3)])
def test_model_slices_and_inverse_have_exact_shapes(tmp_path: Path, file_shape) -> None:
    cfg = PreprocessConfig(image_size=32)
    ct = read_volume(write_nifti(tmp_path / "i.nii.gz", synthetic_ct(file_shape)))
    lab = read_volume(write_nifti(tmp_path / "l.nii.gz", synthetic_labels(file_shape)), kind="label")
    x = volume_to_model_slices(ct, cfg)
    y = labels_to_model_slices(lab, cfg)
    assert x.shape == y.shape == (file_shape[2], 32, 32)
    assert x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1 and y.dtype == np.uint8
    back = model_slices_to_volume(y, lab, kind="label")
    assert back.shape == lab.array.shape and back.dtype == np.uint8
    probs = np.stack([y == c for c in range(3)]).astype(np.float32)
    back_p = model_slices_to_volume(probs, lab, kind="prob")
    assert back_p.shape == (3, *lab.array.shape) and back_p.dtype == np.float32


def test_non_square_slices_are_padded_not_squashed(tmp_path: Path) -> None:
    """A 16x32 slice fills rows 8..24 of a 32x32 model slice; the padding is air (-1) / background (0)."""
    labels = np.ones((32, 16, 2), np.uint8)  # file (i=x, j=y, k=z): canonical slices are 16 rows x 32 cols
    lab = read_volume(write_nifti(tmp_path / "l.nii.gz", labels), kind="label")
    y = labels_to_model_slices(lab, PreprocessConfig(image_size=32))
    assert (y[:, 8:24] == 1).all() and (y[:, :8] == 0).all() and (y[:, 24:] == 0).all()
    np.testing.assert_array_equal(model_slices_to_volume(y, lab, kind="label"), lab.array)


def test_label_inverse_is_exact_when_no_resampling_is_needed(tmp_path: Path) -> None:
    lab = read_volume(write_nifti(tmp_path / "l.nii.gz", synthetic_labels((24, 20, 8))), kind="label")
    y = labels_to_model_slices(lab, PreprocessConfig(image_size=48))  # 24 -> 48: exact 2x upsampling
    np.testing.assert_array_equal(model_slices_to_volume(y, lab, kind="label"), lab.array)


def test_inverse_rejects_wrong_slice_count(tmp_path: Path) -> None:
    lab = read_volume(write_nifti(tmp_path / "lab.nii.gz", synthetic_labels()), kind="label")
    with pytest.raises(ConfigError, match=r"Z = 8 for lab\.nii\.gz"):
        model_slices_to_volume(np.zeros((7, 32, 32), np.uint8), lab, kind="label")
