"""The table of volume formats: every format is found by its endings, and a new one is one class and one line."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import nibabel as nib
import numpy as np
import pytest

from smp_diffusion_encoder._io import atomic_path
from smp_diffusion_encoder.data import io_registry
from smp_diffusion_encoder.data.imageio import GridIO
from smp_diffusion_encoder.data.io_registry import FORMATS, output_formats, reader_for, strip_volume_suffix, writer_for
from smp_diffusion_encoder.data.volume import read_volume, write_label_map
from tests.data.synthetic_volumes import synthetic_ct, write_nifti


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: type(f).__name__)
def test_every_format_is_found_by_its_endings(fmt, tmp_path: Path) -> None:
    for ending in fmt.endings:
        assert reader_for(Path(f"case_0000{ending.upper()}")) is fmt
        assert strip_volume_suffix(f"case_0000{ending}") == "case_0000"
    for ending in fmt.write_endings:
        assert writer_for(Path(f"case{ending}")) is fmt
    if fmt.folder:
        assert reader_for(tmp_path) is fmt
    assert (fmt.name in output_formats()) == bool(fmt.write_endings)


def test_predict_offers_exactly_the_formats_that_write() -> None:
    from smp_diffusion_encoder.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    action = next(a for a in sub.choices["predict"]._actions if a.dest == "output_format")
    assert tuple(action.choices) == output_formats() == ("nifti", "nrrd", "mha", "dicom-seg", "seg-nrrd", "rtstruct")


class ToyIO(GridIO):
    """A format for this test: the file-order array and the affine in a NumPy ``.npz`` archive."""

    name: ClassVar[str] = "toy"
    endings: ClassVar[tuple[str, ...]] = (".toy",)
    write_endings: ClassVar[tuple[str, ...]] = (".toy",)

    def read(self, path: Path) -> nib.Nifti1Image:
        with np.load(path) as archive:
            data, affine = archive["data"], archive["affine"]
        image = nib.Nifti1Image(data, affine)
        image.set_qform(affine, code=1)
        return image

    def write_array(self, data, reference, path: Path, dtype) -> Path:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, data=data.astype(dtype), affine=reference.affine)
        return path


def test_a_new_format_is_one_class_and_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from smp_diffusion_encoder.inference.volume import VolumePrediction, _write_case

    monkeypatch.setattr(io_registry, "FORMATS", (*FORMATS, ToyIO()))  # the one line
    image = read_volume(write_nifti(tmp_path / "ct.nii.gz", synthetic_ct()))
    labels = np.zeros(image.array.shape, np.uint8)
    labels[2:5, 5:10, 4:9] = 3
    back = read_volume(write_label_map(labels, image, tmp_path / "labels.toy"), kind="label")
    assert np.array_equal(back.array, labels) and np.allclose(back.affine, image.affine)
    assert "toy" in output_formats()
    written = _write_case(VolumePrediction(labels), image, tmp_path / "out", "case", "toy")
    assert [p.name for p in written] == ["case.toy"]
