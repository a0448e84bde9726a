"""FLARE 2022 layout discovery (file names only) and discover_volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smp_diffusion_encoder.data.flare import FlareDataset, discover_volumes
from smp_diffusion_encoder.errors import DatasetLayoutError
from tests.data.synthetic_volumes import synthetic_ct, write_dicom_series


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def make_root(root: Path, labeled: str = "FLARE22_LabeledCase50", n: int = 3) -> Path:
    for i in range(1, n + 1):
        touch(root / "Training" / labeled / "images" / f"FLARE22_Tr_{i:04d}_0000.nii.gz")
        touch(root / "Training" / labeled / "labels" / f"FLARE22_Tr_{i:04d}.nii.gz")
    touch(root / "Training" / "FLARE22_UnlabeledCase1-1000" / "Case_00002_0000.nii.gz")
    touch(root / "Training" / "FLARE22_UnlabeledCase1-1000" / "Case_00001_0000.nii.gz")
    touch(root / "Training" / "FLARE22_UnlabeledCase1001-2000" / "sub" / "Case_01001_0000.nii.gz")
    touch(root / "Tuning" / "images" / "FLARETs_0001_0000.nii.gz")
    touch(root / "Tuning" / "labels" / "FLARETs_0001.nii.gz")
    return root


@pytest.mark.parametrize("labeled", ["FLARE22_LabeledCase50", "FLARELabeledCase50"])
def test_discover_full_layout(tmp_path: Path, labeled: str) -> None:
    ds = FlareDataset.discover(make_root(tmp_path / "FLARE22", labeled))
    assert [c.case_id for c in ds.labeled] == ["FLARE22_Tr_0001", "FLARE22_Tr_0002", "FLARE22_Tr_0003"]
    assert ds.labeled[0].label.name == "FLARE22_Tr_0001.nii.gz"
    assert ds.labeled[0].image.name == "FLARE22_Tr_0001_0000.nii.gz"
    assert [c.case_id for c in ds.unlabeled] == ["Case_00001", "Case_00002", "Case_01001"]
    assert all(c.label is None for c in ds.unlabeled)
    assert [(c.case_id, c.label.name) for c in ds.tuning] == [("FLARETs_0001", "FLARETs_0001.nii.gz")]
    assert len(ds.cases) == 7


def test_no_22_unlabeled_folder_and_tuning_without_labels(tmp_path: Path) -> None:
    touch(tmp_path / "Training" / "FLAREUnlabeledCase1-1000" / "Case_00001_0000.nii.gz")
    touch(tmp_path / "Tuning" / "images" / "FLARETs_0001_0000.nii.gz")
    ds = FlareDataset.discover(tmp_path)
    assert len(ds.unlabeled) == 1 and ds.labeled == [] and ds.tuning[0].label is None


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"nowhere: does not exist"):
        FlareDataset.discover(tmp_path / "nowhere")


def test_root_without_expected_folders(tmp_path: Path) -> None:
    touch(tmp_path / "data" / "random.nii.gz")
    with pytest.raises(
        DatasetLayoutError,
        match=r"data: is not a FLARE 2022 root: expected "
        r"Training/FLARE22_LabeledCase50/\{images,labels\}",
    ):
        FlareDataset.discover(tmp_path / "data")


def test_image_without_label_is_named(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "Training/FLARE22_LabeledCase50/labels/FLARE22_Tr_0002.nii.gz").unlink()
    with pytest.raises(DatasetLayoutError, match=r"labels: 1 images have no label \(FLARE22_Tr_0002_0000\.nii\.gz\)"):
        FlareDataset.discover(root)


def test_label_without_image_is_named(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    touch(root / "Training/FLARE22_LabeledCase50/labels/FLARE22_Tr_0099.nii.gz")
    with pytest.raises(DatasetLayoutError, match=r"images: 1 labels have no image \(FLARE22_Tr_0099\.nii\.gz\)"):
        FlareDataset.discover(root)


def test_empty_images_folder(tmp_path: Path) -> None:
    (tmp_path / "Training/FLARE22_LabeledCase50/images").mkdir(parents=True)
    (tmp_path / "Training/FLARE22_LabeledCase50/labels").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"images: holds no NIfTI images"):
        FlareDataset.discover(tmp_path)


def test_empty_unlabeled_folder(tmp_path: Path) -> None:
    (tmp_path / "Training/FLARE22_UnlabeledCase1-1000").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"FLARE22_UnlabeledCase1-1000: holds no NIfTI images"):
        FlareDataset.discover(tmp_path)


def test_discover_volumes_finds_nifti_and_dicom_series_sorted(tmp_path: Path) -> None:
    touch(tmp_path / "b" / "z.nii.gz")
    touch(tmp_path / "a.nii")
    touch(tmp_path / "notes.txt")
    write_dicom_series(tmp_path / "b" / "series", synthetic_ct((6, 6, 2)).astype(np.int16))
    found = discover_volumes(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.nii", "b/series", "b/z.nii.gz"]
    assert discover_volumes(tmp_path / "b" / "series") == [tmp_path / "b" / "series"]


def test_discover_volumes_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DatasetLayoutError,
        match=r"empty: holds no volume files \(\.nii, \.nii\.gz, \.nrrd, "
        r"\.nhdr, \.mha, \.mhd\) or DICOM",
    ):
        discover_volumes(tmp_path / "empty")
