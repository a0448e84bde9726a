"""The procedural phantom: anatomy, HU, orientation, reproducibility, FLARE layout round trip."""

from __future__ import annotations

import numpy as np
import pytest

from smp_diffusion_encoder.data.flare import FlareDataset
from smp_diffusion_encoder.data.phantom import generate_case, render_preview, write_phantom_dataset
from smp_diffusion_encoder.data.remap import FLARE_ORGANS
from smp_diffusion_encoder.data.volume import read_volume

SMALL = (16, 64, 64)
# median HU per FLARE id (portal-venous phase), generous bounds
HU_RANGE = {
    1: (90, 130),
    2: (130, 200),
    3: (100, 140),
    4: (70, 110),
    5: (140, 210),
    6: (110, 150),
    7: (20, 80),
    8: (20, 80),
    9: (-10, 30),
    10: (20, 70),
    11: (-100, 80),
    12: (20, 70),
    13: (130, 200),
}


@pytest.fixture(scope="module")
def case() -> tuple[np.ndarray, np.ndarray]:
    return generate_case(7)


def _centroid(labels: np.ndarray, organ: int) -> np.ndarray:
    return np.argwhere(labels == organ).mean(0)  # (z, y, x) voxels


def test_all_13_organs_with_plausible_hu(case: tuple[np.ndarray, np.ndarray]) -> None:
    image, labels = case
    assert image.dtype == np.int16 and labels.dtype == np.uint8 and image.shape == labels.shape == (48, 192, 192)
    assert set(np.unique(labels)) == set(range(len(FLARE_ORGANS) + 1))
    for organ, (lo, hi) in HU_RANGE.items():
        median = float(np.median(image[labels == organ]))
        assert lo <= median <= hi, (FLARE_ORGANS[organ - 1], median)
    assert image.min() <= -990 and image.max() >= 600  # air outside the body, cortical bone
    assert 8 < float(np.std(image[labels == 1])) < 25  # textured, noisy liver


def test_anatomy_in_canonical_orientation(case: tuple[np.ndarray, np.ndarray]) -> None:
    _, labels = case
    c = {organ: _centroid(labels, organ) for organ in range(1, 14)}
    mid_x, mid_y = labels.shape[2] / 2, labels.shape[1] / 2
    assert c[1][2] < mid_x < c[3][2]  # liver on the image's left (patient's right), spleen opposite
    assert c[2][2] < mid_x < c[13][2] and c[2][0] < c[13][0]  # right kidney on the left and lower
    assert c[2][1] > mid_y and c[13][1] > mid_y and c[3][1] > mid_y  # kidneys and spleen posterior
    assert c[6][2] < c[5][2]  # IVC to the patient's right of the aorta
    assert c[4][1] < c[5][1]  # pancreas anterior to the aorta
    assert c[7][0] > c[2][0] and c[8][0] > c[13][0]  # adrenals above the kidneys
    assert np.argwhere(labels == 10)[:, 0].min() > labels.shape[0] / 2  # esophagus only in upper slices
    assert c[11][2] > mid_x and c[9][2] < mid_x  # stomach left-upper, gallbladder under the liver


def test_reproducible_per_seed_and_varied_across_seeds() -> None:
    a_img, a_lab = generate_case(3, shape=SMALL)
    b_img, b_lab = generate_case(3, shape=SMALL)
    c_img, c_lab = generate_case(4, shape=SMALL)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(a_lab, c_lab)
    assert np.abs(_centroid(a_lab, 1) - _centroid(c_lab, 1)).max() > 0.5  # the liver moved
    assert abs(int((a_lab > 0).sum()) - int((c_lab > 0).sum())) > 50  # and organs changed size


def test_dataset_layout_round_trips_through_read_volume(tmp_path) -> None:
    root = write_phantom_dataset(tmp_path / "flare", n_labeled=2, n_unlabeled=1, n_tuning=1, seed=1, shape=SMALL)
    ds = FlareDataset.discover(root)
    assert [c.case_id for c in ds.labeled] == ["PHANTOM_Tr_0001", "PHANTOM_Tr_0002"]
    assert [c.case_id for c in ds.unlabeled] == ["PHANTOM_Un_0001"]
    assert [c.case_id for c in ds.tuning] == ["PHANTOM_Ts_0001"] and ds.tuning[0].label is not None
    assert ds.labeled[0].image.name == "PHANTOM_Tr_0001_0000.nii.gz"
    image = read_volume(ds.labeled[1].image)
    labels = read_volume(ds.labeled[1].label, kind="label")
    exp_img, exp_lab = generate_case(1 * 100_003 + 2, shape=SMALL)
    np.testing.assert_array_equal(image.array, exp_img)
    np.testing.assert_array_equal(labels.array, exp_lab)
    assert image.spacing == pytest.approx((15.0, 6.0, 6.0))
    assert not list(root.rglob(".*tmp-*"))


def test_render_preview_writes_png(tmp_path, case) -> None:
    image, labels = case
    out = render_preview(image, labels, tmp_path / "p.png", spacing_mm=(5.0, 2.0, 2.0))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert render_preview(image, None, tmp_path / "q.png").stat().st_size > 1000
