"""Partly labeled scans: the sidecar that lists labeled slices, 3D Slicer .seg.nrrd label maps, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from smp_diffusion_encoder.data.labeled_slices import (
    labeled_or_organ_slices,
    read_label_map,
    read_sidecar,
    sidecar_path,
    slice_in_file,
    slice_positions_mm,
    write_sidecar,
)
from smp_diffusion_encoder.data.slicer_seg import default_label_table, read_label_table, read_slicer_segmentation
from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.errors import CorruptFileError, InputFileError, LabelMismatchError
from tests.data.synthetic_volumes import PERMUTED_AFFINE, synthetic_ct, write_nifti

SHAPE = (24, 20, 8)  # file voxel order (i, j, k); PERMUTED_AFFINE puts k along inferior: canonical z = 7 - k


def _labels(ks: list[int]) -> np.ndarray:
    """Liver (1) on file slices ``ks`` only (the other slices unlabeled, i.e. empty)."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    for k in ks:
        labels[4:10, 3:9, k] = 1
        labels[14:18, 10:14, k] = 2
    return labels


@pytest.fixture
def case(tmp_path: Path) -> Path:
    """A case folder: image.nii.gz and label.nii.gz with organs on file slices k = 1 and 5 (canonical z 6, 2)."""
    folder = tmp_path / "CASE_0001"
    write_nifti(folder / "image.nii.gz", synthetic_ct(SHAPE), PERMUTED_AFFINE)
    write_nifti(folder / "label.nii.gz", _labels([1, 5]), PERMUTED_AFFINE)
    return folder


def test_sidecar_names_follow_the_label_map() -> None:
    assert sidecar_path("C/label.nii.gz") == Path("C/label.slices.json")
    assert sidecar_path("C/label.seg.nrrd") == Path("C/label.slices.json")
    assert sidecar_path("labels/FLARE22_Tr_0001.nii.gz") == Path("labels/FLARE22_Tr_0001.slices.json")
    assert sidecar_path("labels/X.mha") == Path("labels/X.slices.json")


def test_a_labeled_empty_slice_counts_and_unlabeled_ones_do_not(case: Path) -> None:
    image = read_volume(case / "image.nii.gz")
    assert [slice_in_file(image, z) for z in (0, 2, 6, 7)] == [7, 5, 1, 0]  # k runs from superior to inferior
    write_sidecar(case / "label.slices.json", [2, 6, 4])  # z=4 (file k=3) is labeled: no organ there
    label = read_label_map(case / "label.nii.gz", image)
    assert label.labeled == (2, 4, 6) and label.partial and label.sidecar == case / "label.slices.json"
    assert labeled_or_organ_slices(label) == [2, 4, 6]
    assert not label.volume.array[4].any()
    assert json.loads((case / "label.slices.json").read_text())["format"] == "smp_diffusion_encoder.labeled_slices"


def test_without_a_sidecar_a_scan_is_fully_labeled(case: Path) -> None:
    image = read_volume(case / "image.nii.gz")
    label = read_label_map(case / "label.nii.gz", image)
    assert label.labeled is None and labeled_or_organ_slices(label) == [2, 6]


def test_a_gappy_map_without_a_sidecar_warns(tmp_path: Path) -> None:
    write_nifti(tmp_path / "image.nii.gz", synthetic_ct(SHAPE), PERMUTED_AFFINE)
    write_nifti(tmp_path / "label.nii.gz", _labels([0, 3, 6]), PERMUTED_AFFINE)
    with pytest.warns(UserWarning, match="label.slices.json"):
        read_label_map(tmp_path / "label.nii.gz", read_volume(tmp_path / "image.nii.gz"))


def test_positions_in_mm_select_slices(case: Path) -> None:
    image = read_volume(case / "image.nii.gz")
    mm = slice_positions_mm(image)
    assert np.allclose(np.diff(mm), 2.5)  # canonical z runs inferior -> superior
    (case / "label.slices.json").write_text(
        json.dumps(
            {"format": "smp_diffusion_encoder.labeled_slices", "version": 1, "positions_mm": [mm[2] + 1.0, mm[6]]}
        )
    )
    assert read_label_map(case / "label.nii.gz", image).labeled == (2, 6)


@pytest.mark.parametrize(
    "content, message",
    [
        (
            {"format": "smp_diffusion_encoder.labeled_slices", "version": 1, "z": [2, 6, 8]},
            r"lists z=\[8\], outside the 8",
        ),
        ({"format": "smp_diffusion_encoder.labeled_slices", "version": 1, "z": []}, "lists no labeled slice"),
        ({"format": "smp_diffusion_encoder.labeled_slices", "version": 1, "z": [2, 6, 6]}, r"z=\[6\] twice"),
        ({"format": "smp_diffusion_encoder.labeled_slices", "version": 1, "z": ["2"]}, "integer slice indices"),
        ({"format": "smp_diffusion_encoder.labeled_slices", "version": 1, "positions_mm": [1e4]}, "is not on a slice"),
        ({"format": "something else", "version": 1, "z": [2]}, "is not a labeled-slices sidecar"),
        ({"format": "smp_diffusion_encoder.labeled_slices", "version": 2, "z": [2]}, "version 2"),
        ({"format": "smp_diffusion_encoder.labeled_slices", "version": 1, "slices": [2]}, "unknown keys"),
    ],
)
def test_bad_sidecars_name_the_file(case: Path, content: dict, message: str) -> None:
    (case / "label.slices.json").write_text(json.dumps(content))
    with pytest.raises(InputFileError, match=message) as err:
        read_label_map(case / "label.nii.gz", read_volume(case / "image.nii.gz"))
    assert "label.slices.json" in str(err.value)


def test_organs_on_unlisted_slices_are_refused(case: Path) -> None:
    write_sidecar(case / "label.slices.json", [2])
    with pytest.raises(
        LabelMismatchError,
        match=r"label.nii.gz: has organs on slices z=\[6\] that "
        r"label.slices.json does not list",
    ):
        read_label_map(case / "label.nii.gz", read_volume(case / "image.nii.gz"))


def test_a_listed_slice_on_another_grid_is_refused(case: Path) -> None:
    shifted = PERMUTED_AFFINE.copy()
    shifted[2, 3] += 1.25  # half a slice along z: the labeled slices are not the image's slices
    write_nifti(case / "label.nii.gz", _labels([1, 5]), shifted)
    write_sidecar(case / "label.slices.json", [2, 6])
    with pytest.raises(LabelMismatchError, match="label.nii.gz: affine differs from image image.nii.gz"):
        read_label_map(case / "label.nii.gz", read_volume(case / "image.nii.gz"))


# 3D Slicer segmentations, written with slicerio as 3D Slicer writes them


def _write_seg(path: Path, masks: dict[str, np.ndarray], affine: np.ndarray = PERMUTED_AFFINE) -> Path:
    import slicerio

    seg = slicerio.create_segmentation(next(iter(masks.values())).shape, np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine)
    for name, mask in masks.items():
        slicerio.add_segment(seg, mask, {"name": name})
    slicerio.write_segmentation(str(path), seg)
    return path


def test_seg_nrrd_segments_become_flare_ids_on_the_image_grid(case: Path) -> None:
    truth = _labels([1, 5])
    _write_seg(case / "label.seg.nrrd", {"Liver": truth == 1, "Right_kidney": truth == 2})
    write_sidecar(case / "label.slices.json", [2, 4, 6])
    image = read_volume(case / "image.nii.gz")
    label = read_label_map(case / "label.seg.nrrd", image)
    assert np.array_equal(label.volume.array, read_volume(case / "label.nii.gz", kind="label").array)
    assert label.labeled == (2, 4, 6) and label.volume.source == case / "label.seg.nrrd"


def test_a_seg_nrrd_cropped_to_its_segments_is_placed_on_the_image_grid(case: Path) -> None:
    truth = _labels([1, 5])
    block = (slice(4, 18), slice(3, 14), slice(1, 6))  # what 3D Slicer keeps: the box around the segments
    affine = PERMUTED_AFFINE.copy()
    affine[:3, 3] = PERMUTED_AFFINE[:3, :3] @ np.array([4, 3, 1]) + PERMUTED_AFFINE[:3, 3]
    _write_seg(case / "label.seg.nrrd", {"liver": truth[block] == 1, "RK": truth[block] == 2}, affine)
    image = read_volume(case / "image.nii.gz")
    label = read_slicer_segmentation(case / "label.seg.nrrd", image)
    assert np.array_equal(label.array, read_volume(case / "label.nii.gz", kind="label").array)


def test_a_users_table_maps_segment_names_and_drops_id_0(case: Path, tmp_path: Path) -> None:
    truth = _labels([1, 5])
    _write_seg(case / "label.seg.nrrd", {"Leber": truth == 1, "Tumor": truth == 2})
    table_file = tmp_path / "table.json"
    table_file.write_text(json.dumps({"Leber": 1, "tumor": 0}))
    label = read_slicer_segmentation(
        case / "label.seg.nrrd", read_volume(case / "image.nii.gz"), read_label_table(table_file)
    )
    assert set(np.unique(label.array)) == {0, 1}
    with pytest.raises(
        LabelMismatchError,
        match=r"label.seg.nrrd: segments \['Leber', 'Tumor'\] are not in the "
        r"label table",
    ):
        read_slicer_segmentation(case / "label.seg.nrrd", read_volume(case / "image.nii.gz"))


def test_overlapping_segments_are_refused(case: Path) -> None:
    truth = _labels([1, 5])
    _write_seg(case / "label.seg.nrrd", {"liver": truth == 1, "stomach": truth > 0})  # two layers, overlapping
    with pytest.raises(LabelMismatchError, match="label.seg.nrrd: segments 'liver' and 'stomach' overlap"):
        read_slicer_segmentation(case / "label.seg.nrrd", read_volume(case / "image.nii.gz"))


def test_a_seg_nrrd_on_another_grid_is_refused(case: Path) -> None:
    coarse = PERMUTED_AFFINE @ np.diag([2.0, 2.0, 1.0, 1.0])
    _write_seg(case / "label.seg.nrrd", {"liver": np.ones((12, 10, 8), bool)}, coarse)
    with pytest.raises(LabelMismatchError, match="label.seg.nrrd: is 12x10x8 but image image.nii.gz is 24x20x8"):
        read_slicer_segmentation(case / "label.seg.nrrd", read_volume(case / "image.nii.gz"))


def test_unreadable_seg_nrrd_and_bad_tables_name_the_file(case: Path, tmp_path: Path) -> None:
    (case / "label.seg.nrrd").write_bytes(b"not a nrrd")
    with pytest.raises(CorruptFileError, match="label.seg.nrrd: cannot read as a 3D Slicer segmentation"):
        read_slicer_segmentation(case / "label.seg.nrrd", read_volume(case / "image.nii.gz"))
    bad = tmp_path / "table.json"
    bad.write_text(json.dumps({"liver": 14}))
    with pytest.raises(InputFileError, match="table.json: label table: segment 'liver' maps to 14"):
        read_label_table(bad)


def test_default_table_accepts_flare_names() -> None:
    table = default_label_table()
    assert table["liver"] == 1 and table["right kidney"] == 2 and table["rk"] == 2 and table["lk"] == 13
    assert table["inferior vena cava"] == 6 and table["ivc"] == 6 and table["left adrenal gland"] == 8


def test_read_sidecar_directly(case: Path) -> None:
    write_sidecar(case / "label.slices.json", [6, 2])
    assert read_sidecar(case / "label.slices.json", read_volume(case / "label.nii.gz", kind="label")) == (2, 6)
