"""The real CT volumes in ../shared/data/realct load through the FLARE code path (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from smp_diffusion_encoder.data.flare import FlareDataset
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig, volume_to_model_slices
from smp_diffusion_encoder.data.volume import check_label_ids, check_pair, read_volume, write_label_map

REALCT = Path(os.environ.get("SMP_DIFFUSION_REALCT", Path(__file__).resolve().parents[2].parent / "shared/data/realct"))

pytestmark = [
    pytest.mark.realct,
    pytest.mark.skipif(not (REALCT / "Training").is_dir(), reason=f"real CT not found at {REALCT}"),
]


@pytest.fixture(scope="module")
def dataset() -> FlareDataset:
    return FlareDataset.discover(REALCT)


def test_layout(dataset: FlareDataset) -> None:
    assert [c.case_id for c in dataset.labeled] == ["REALCT_Tr_0001"]
    assert [c.case_id for c in dataset.unlabeled] == [f"REALCT_Un_{i:04d}" for i in range(1, 5)]
    assert dataset.tuning == []


def test_labeled_case_reads_checks_and_round_trips(dataset: FlareDataset, tmp_path: Path) -> None:
    case = dataset.labeled[0]
    image = read_volume(case.image)
    label = read_volume(case.label, kind="label")
    check_pair(image, label)
    check_label_ids(label)
    assert image.array.shape == (112, 101, 122) and image.spacing == pytest.approx((3, 3, 3))
    assert set(np.unique(label.array)) == set(range(14)) - {10}  # no esophagus
    out = read_volume(write_label_map(label.array, image, tmp_path / "p.nii.gz"), kind="label")
    np.testing.assert_array_equal(out.array, label.array)
    np.testing.assert_array_equal(out.affine, label.affine)
    # canonical orientation: the liver (1) lies on the patient's right = image left (low x)
    _, _, x = np.nonzero(label.array == 1)
    _, _, x_spleen = np.nonzero(label.array == 3)
    assert x.mean() < x_spleen.mean()


def test_unlabeled_cases_pass_the_ct_check(dataset: FlareDataset) -> None:
    for case in dataset.unlabeled:
        vol = read_volume(case.image)
        assert vol.array.dtype == np.float32 and vol.array.min() <= -1000
        if vol.array.shape[1] == 512:  # the big ones: check the model slices once
            x = volume_to_model_slices(vol, PreprocessingConfig(image_size=64))
            assert x.shape == (vol.array.shape[0], 64, 64) and -1 <= x.min() and x.max() <= 1
