"""HU windowing, slice resizing and the exact inverse back to the reference grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from smp_diffusion_encoder.data.preprocessing import (
    PreprocessingConfig,
    SliceGeometry,
    body_centre,
    resize_image_slices,
    resize_label_slices,
    window_hu,
)
from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.errors import ConfigError
from tests.data.synthetic_volumes import synthetic_ct, synthetic_labels, write_nifti


def test_config_round_trips_through_json() -> None:
    cfg = PreprocessingConfig(hu_window=(-200, 300), image_size=128)
    assert PreprocessingConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.to_dict() == {"hu_window": [-200.0, 300.0], "image_size": 128, "spacing_mm": 3.0}
    assert PreprocessingConfig().spacing_mm == 1.5  # "auto": a 384 mm window at the default 256 px
    # a dict written before physical preprocessing existed keeps the legacy whole-field-of-view layout
    assert PreprocessingConfig.from_dict({"hu_window": [-160, 240], "image_size": 128}).spacing_mm is None
    assert PreprocessingConfig.from_dict({}) == PreprocessingConfig(spacing_mm=None)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"hu_window": [0, 1], "size": 3}, r"unknown preprocessing keys \['size'\]"),
        ({"hu_window": [240, -160]}, "low < high"),
        ({"hu_window": [1]}, r"hu_window must be \[low, high\]"),
        ({"image_size": 4}, "image_size must be an integer >= 8"),
        ({"image_size": 64.0}, "image_size must be an integer"),
        ({"spacing_mm": 0}, "spacing_mm must be a number of mm"),
        ({"spacing_mm": "3"}, "spacing_mm must be a number of mm"),
    ],
)
def test_config_rejects_bad_values(bad: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PreprocessingConfig.from_dict(bad)


def test_window_maps_the_window_onto_minus_one_one() -> None:
    out = window_hu(np.array([-1000, -160, 40, 240, 3000]), PreprocessingConfig())
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


@pytest.mark.parametrize("spacing", [None, "auto"])
@pytest.mark.parametrize("file_shape", [(24, 20, 8), (20, 24, 8), (16, 16, 3)])
def test_model_slices_and_inverse_have_exact_shapes(tmp_path: Path, file_shape, spacing) -> None:
    cfg = PreprocessingConfig(image_size=32, spacing_mm=spacing)
    ct = read_volume(write_nifti(tmp_path / "i.nii.gz", synthetic_ct(file_shape)))
    lab = read_volume(write_nifti(tmp_path / "l.nii.gz", synthetic_labels(file_shape)), kind="label")
    geometry = SliceGeometry.of(ct, cfg)
    x = geometry.image_slices(ct, cfg)
    y = geometry.label_slices(lab)
    assert x.shape == y.shape == (file_shape[2], 32, 32)
    assert x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1 and y.dtype == np.uint8
    back = geometry.labels_to_volume(y)
    assert back.shape == lab.array.shape and back.dtype == np.uint8
    probs = np.stack([y == c for c in (0, 1, 2, 13)], axis=1).astype(np.float32)  # (Z, 4, S, S), one-hot
    back_p = geometry.probabilities_to_volume(probs)
    assert back_p.shape == (file_shape[2], 4, *lab.array.shape[1:]) and back_p.dtype == np.float32
    np.testing.assert_allclose(back_p.sum(axis=1), 1.0, atol=1e-5)


def test_legacy_non_square_slices_are_padded_not_squashed(tmp_path: Path) -> None:
    """A 16x32 slice fills rows 8..24 of a 32x32 model slice; the padding is air (-1) / background (0)."""
    labels = np.ones((32, 16, 2), np.uint8)  # file (i=x, j=y, k=z): canonical slices are 16 rows x 32 cols
    lab = read_volume(write_nifti(tmp_path / "l.nii.gz", labels), kind="label")
    geometry = SliceGeometry((16, 32), 32, "legacy")
    y = geometry.label_slices(lab)
    assert (y[:, 8:24] == 1).all() and (y[:, :8] == 0).all() and (y[:, 24:] == 0).all()
    np.testing.assert_array_equal(geometry.labels_to_volume(y), lab.array)


def test_legacy_label_inverse_is_exact_when_no_resampling_is_needed(tmp_path: Path) -> None:
    ct = read_volume(write_nifti(tmp_path / "i.nii.gz", synthetic_ct((24, 20, 8))))
    lab = read_volume(write_nifti(tmp_path / "l.nii.gz", synthetic_labels((24, 20, 8))), kind="label")
    geometry = SliceGeometry.of(ct, PreprocessingConfig(image_size=48, spacing_mm=None))  # 24 -> 48: exact 2x
    np.testing.assert_array_equal(geometry.labels_to_volume(geometry.label_slices(lab)), lab.array)


def test_inverse_rejects_wrong_shapes(tmp_path: Path) -> None:
    ct = read_volume(write_nifti(tmp_path / "i.nii.gz", synthetic_ct()))
    geometry = SliceGeometry.of(ct, PreprocessingConfig(image_size=32))
    with pytest.raises(ConfigError, match=r"expected \(N, 32, 32\)"):
        geometry.labels_to_volume(np.zeros((7, 16, 16), np.uint8))
    with pytest.raises(ConfigError, match="this geometry was made for"):
        geometry.image_slices(
            read_volume(write_nifti(tmp_path / "o.nii.gz", synthetic_ct((10, 10, 2)))),
            PreprocessingConfig(image_size=32),
        )


# ----- physical layout -----------------------------------------------------------------------------------
def _phantom(shape_yx: tuple[int, int], spacing: float, centre_mm: tuple[float, float], z: int = 3) -> np.ndarray:
    """File-order (i=x, j=y, k=z) HU: air with a soft-tissue disc of radius 60 mm and a 15 mm 'organ' (200 HU)
    inside it, 20 mm right of the disc centre; pixel ``spacing`` mm; ``centre_mm`` = (row, col) in mm."""
    h, w = shape_yx
    rows, cols = (np.arange(h) + 0.5) * spacing, (np.arange(w) + 0.5) * spacing
    rr, cc = np.meshgrid(rows, cols, indexing="ij")  # (Y, X) in mm
    disc = (rr - centre_mm[0]) ** 2 + (cc - centre_mm[1]) ** 2 < 60**2
    organ = (rr - centre_mm[0]) ** 2 + (cc - centre_mm[1] - 20) ** 2 < 15**2
    slice_ = np.where(organ, 200, np.where(disc, 40, -1000)).astype(np.int16)
    return np.repeat(slice_.T[:, :, None], z, axis=2)  # canonical (Y, X) -> file (x, y)


def _read(tmp_path: Path, name: str, data: np.ndarray, spacing: float, kind: str = "image"):
    # file axes (x, y, z) with LPS-like flips chosen so canonical (Z, Y, X) keeps the array's row/col order
    affine = np.diag([-spacing, -spacing, 2.0, 1.0])
    return read_volume(write_nifti(tmp_path / name, data, affine), kind=kind)


def test_physical_layout_gives_organs_the_same_size_whatever_the_field_of_view(tmp_path: Path) -> None:
    """The same anatomy scanned with 0.8 mm pixels (400 px, 320 mm) and 1.25 mm pixels (200 px, 250 mm) gives the
    same model slices at 2 mm / 64 px: the organ covers the same pixels (legacy layout: 1.6x apart)."""
    fine = _read(tmp_path, "fine.nii.gz", _phantom((400, 400), 0.8, (150.0, 170.0)), 0.8)
    coarse = _read(tmp_path, "coarse.nii.gz", _phantom((200, 200), 1.25, (120.0, 125.0)), 1.25)
    cfg = PreprocessingConfig(image_size=64, spacing_mm=2.0)
    a, b = (SliceGeometry.of(v, cfg).image_slices(v, cfg)[0] for v in (fine, coarse))
    organ_a, organ_b = a > 0.5, b > 0.5  # the organ's 200 HU is 0.8 in the default window, tissue's 40 HU 0.0
    assert abs(int(organ_a.sum()) - int(organ_b.sum())) <= 0.1 * organ_a.sum()
    assert abs(organ_a.sum() - np.pi * 7.5**2) < 0.15 * np.pi * 7.5**2  # radius 15 mm = 7.5 px
    # both bodies are centred in the window (within a pixel), whatever their place in the scan
    for x in (a, b):
        rows, cols = np.nonzero(x > -0.5)
        assert abs((rows.min() + rows.max()) / 2 - 31.5) <= 1 and abs((cols.min() + cols.max()) / 2 - 31.5) <= 1
    legacy = PreprocessingConfig(image_size=64, spacing_mm=None)
    la, lb = (SliceGeometry.of(v, legacy).image_slices(v, legacy)[0] > 0.5 for v in (fine, coarse))
    assert lb.sum() > 1.4 * la.sum()  # the old layout: organ size depends on the scan's field of view


def test_physical_inverse_puts_labels_back_where_they_were(tmp_path: Path) -> None:
    """2x downsampling (1 mm -> 2 mm) of a 0/1 map made of 2x2 blocks is exact both ways; outside the window the
    inverse is background."""
    data = _phantom((160, 200), 1.0, (80.0, 60.0))
    image = _read(tmp_path, "i.nii.gz", data, 1.0)
    blocks = np.kron(np.random.default_rng(0).integers(0, 3, (80, 100)), np.ones((2, 2), np.int64)).astype(np.uint8)
    label_data = np.repeat(blocks.T[:, :, None], 3, axis=2)
    labels = _read(tmp_path, "l.nii.gz", label_data, 1.0, kind="label")
    cfg = PreprocessingConfig(image_size=64, spacing_mm=2.0)
    geometry = SliceGeometry.of(image, cfg)
    assert geometry.mode == "physical" and geometry.scaled_shape == (80, 100)
    model = geometry.label_slices(labels)
    back = geometry.labels_to_volume(model)
    inside = np.zeros(labels.array.shape[1:], bool)
    (src_r, _), (src_c, _) = geometry._overlap()
    inside[2 * src_r.start : 2 * src_r.stop, 2 * src_c.start : 2 * src_c.stop] = True
    np.testing.assert_array_equal(back[:, inside], labels.array[:, inside])
    assert (back[:, ~inside] == 0).all() and (~inside).any()
    probs = np.stack([model == c for c in range(3)], axis=1).astype(np.float32)
    back_p = geometry.probabilities_to_volume(probs)
    far = ~ndimage.binary_dilation(inside, iterations=2)  # bilinear upsampling blends the window's edge
    assert (back_p[:, 0][:, far] == 1).all() and (back_p[:, 1:][:, :, far] == 0).all()


def test_physical_window_is_placed_on_the_body_not_the_table(tmp_path: Path) -> None:
    """A dense table strip detached from the body does not move the window off the body."""
    data = _phantom((300, 300), 1.0, (120.0, 150.0))
    data[:, 250:262, :] = 100  # file (x, y, z): rows 250..262 of every slice: a table below the patient
    image = _read(tmp_path, "i.nii.gz", data, 1.0)
    row, col = body_centre(image.array)
    assert abs(row - 119.5) <= 1.5 and abs(col - 149.5) <= 1.5
