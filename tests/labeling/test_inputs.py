"""What suggest ranks: scans from files, DICOM folders, case folders and FLARE roots; labeled slices from case folders,
split files, sidecars and label maps; errors name the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from smp_diffusion_encoder.data.flare import FlareDataset
from smp_diffusion_encoder.data.labeled_slices import write_sidecar
from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.data.splits import Split, write_split_json
from smp_diffusion_encoder.errors import InputFileError
from smp_diffusion_encoder.labeling.inputs import find_scans, labeled_slices, read_scan_images


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("phantom"), n_labeled=2, n_unlabeled=1, shape=(8, 32, 32))


def test_a_flare_root_gives_its_cases_with_their_labels(root: Path) -> None:
    scans = find_scans([root])
    assert [(s.scan_id, s.label is not None) for s in scans] == [
        ("PHANTOM_Tr_0001", True),
        ("PHANTOM_Tr_0002", True),
        ("PHANTOM_Un_0001", False),
    ]
    labeled = labeled_slices(scans, read_scan_images(scans))
    assert labeled["PHANTOM_Tr_0001"] == set(range(8)) and labeled["PHANTOM_Un_0001"] == set()  # fully labeled


def test_case_folders_loose_files_and_the_files_that_say_what_is_labeled(root: Path, tmp_path: Path) -> None:
    (tr1, tr2) = FlareDataset.discover(root).labeled
    case = tmp_path / "scans" / "CASE_0001"
    case.mkdir(parents=True)
    shutil.copyfile(tr1.image, case / "image.nii.gz")
    shutil.copyfile(tr1.label, case / "label.nii.gz")
    write_sidecar(case / "label.slices.json", range(8))
    shutil.copyfile(tr2.image, tmp_path / "scans" / "LOOSE_0001_0000.nii.gz")
    scans = find_scans([tmp_path / "scans"])
    assert [(s.scan_id, s.label is not None) for s in scans] == [("CASE_0001", True), ("LOOSE_0001", False)]
    images = read_scan_images(scans)
    split = tmp_path / "split.json"
    write_split_json(split, Split("2", 0, (("LOOSE_0001", 3), ("ELSEWHERE", 1))))
    side = tmp_path / "LOOSE_0001.slices.json"
    write_sidecar(side, [6])
    with pytest.warns(UserWarning, match=r"cases \['ELSEWHERE'\] are not among the scans"):
        labeled = labeled_slices(scans, images, [split, side])
    assert labeled == {"CASE_0001": set(range(8)), "LOOSE_0001": {3, 6}}
    stray = tmp_path / "other" / "notes.nii.gz"
    stray.parent.mkdir()
    shutil.copyfile(tr2.label, stray)
    with pytest.raises(InputFileError, match="notes.nii.gz: belongs to no scan given"):
        labeled_slices(scans, images, [stray])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="holds no scan"):
        find_scans([tmp_path / "empty"])
