"""Fine-tuning on partly labeled scans: exactly the slices a sidecar lists train (a labeled-empty one too), from case
folders, NIfTI or 3D Slicer .seg.nrrd label maps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import smp_diffusion_encoder  # noqa: F401  (registers ddpm-ct-tiny)
from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.data.flare import FlareDataset
from smp_diffusion_encoder.data.labeled_slices import write_sidecar
from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.data.splits import Split, read_split_json
from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.finetune import FinetuneConfig, finetune

TINY = dict(method="unet", encoder="ddpm-ct-tiny", encoder_weights=None, steps=2, batch_size=2, augment_views=2)


@pytest.fixture(scope="module")
def full_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = write_phantom_dataset(tmp_path_factory.mktemp("phantom"), n_labeled=1, n_unlabeled=0, shape=(12, 64, 64))
    case = FlareDataset.discover(root).labeled[0]
    return case.image, case.label  # type: ignore[return-value]


def _partial_case(full: tuple[Path, Path], folder: Path, listed: list[int], empty: int) -> Path:
    """A case folder whose label map keeps the organs of ``listed`` only; slice ``empty`` (listed) is labeled as
    holding no organ; the sidecar lists ``listed``."""
    image_path, label_path = full
    folder.mkdir(parents=True)
    shutil.copyfile(image_path, folder / "image.nii.gz")
    label = read_volume(label_path, kind="label")
    keep = np.zeros_like(label.array)
    keep[listed] = label.array[listed]
    keep[empty] = 0
    img = nib.load(label_path)
    nib.save(nib.Nifti1Image(label.to_original(keep), img.affine, img.header), folder / "label.nii.gz")
    write_sidecar(folder / "label.slices.json", listed)
    return folder


def test_the_listed_slices_train_including_a_labeled_empty_one(full_case: tuple[Path, Path], tmp_path: Path) -> None:
    folder = _partial_case(full_case, tmp_path / "CASE_0001", [2, 5, 9], empty=9)
    result = finetune(folder, FinetuneConfig(**TINY, budget="all"), out_dir=tmp_path / "run", progress=False)
    split = read_split_json(tmp_path / "run" / "split.json")
    assert split.train == (("CASE_0001", 2), ("CASE_0001", 5), ("CASE_0001", 9))
    assert result.model_dir.is_dir()


def test_a_small_budget_warns_that_labels_go_unused(full_case: tuple[Path, Path], tmp_path: Path) -> None:
    folder = _partial_case(full_case, tmp_path / "CASE_0001", [2, 5, 9], empty=9)
    with pytest.warns(UserWarning, match="trains on 2 of the 3 slices the sidecars list as labeled"):
        finetune(folder, FinetuneConfig(**TINY, budget="2"), out_dir=tmp_path / "run", progress=False)
    assert set(read_split_json(tmp_path / "run" / "split.json").train) <= {("CASE_0001", z) for z in (2, 5, 9)}


def test_a_split_naming_an_unlabeled_slice_is_refused(full_case: tuple[Path, Path], tmp_path: Path) -> None:
    folder = _partial_case(full_case, tmp_path / "CASE_0001", [2, 5], empty=5)
    split = Split("given", 0, (("CASE_0001", 2), ("CASE_0001", 3)))
    with pytest.raises(ConfigError, match="slice z=3 of 'CASE_0001', which its sidecar does not list as labeled"):
        finetune(folder, FinetuneConfig(**TINY), out_dir=tmp_path / "run", split=split, progress=False)


def test_a_seg_nrrd_case_trains_from_the_command_line(full_case: tuple[Path, Path], tmp_path: Path) -> None:
    import slicerio

    folder = _partial_case(full_case, tmp_path / "cases" / "CASE_0001", [3, 6], empty=6)
    label_nifti = folder / "label.nii.gz"
    img = nib.load(label_nifti)
    data = np.asarray(img.dataobj)
    seg = slicerio.create_segmentation(data.shape, np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine)
    for value in np.unique(data[data > 0]):
        slicerio.add_segment(seg, data == value, {"name": f"organ {value}"})
    slicerio.write_segmentation(str(folder / "label.seg.nrrd"), seg)
    label_nifti.unlink()
    table = tmp_path / "table.json"
    table.write_text(json.dumps({f"organ {v}": int(v) for v in np.unique(data[data > 0])}))
    out = tmp_path / "run"
    assert (
        main(
            [
                "finetune",
                str(tmp_path / "cases"),
                "--out",
                str(out),
                "--budget",
                "all",
                "--method",
                "unet",
                "--encoder",
                "ddpm-ct-tiny",
                "--encoder-weights",
                "none",
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--augment-views",
                "2",
                "--label-table",
                str(table),
                "--no-progress",
            ]
        )
        == 0
    )
    assert read_split_json(out / "split.json").train == (("CASE_0001", 3), ("CASE_0001", 6))
    assert json.loads((out / "config.json").read_text())["label_table"] == str(table)
    assert (
        main(
            [
                "finetune",
                str(tmp_path / "cases"),
                "--out",
                str(tmp_path / "run2"),
                "--budget",
                "all",
                "--encoder",
                "ddpm-ct-tiny",
                "--steps",
                "2",
                "--no-progress",
            ]
        )
        == 2
    )  # no table: unknown names
