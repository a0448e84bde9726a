"""``--output-format seg-nrrd``: a 3D Slicer segmentation on the reference's exact grid, read back with pynrrd
(segment names, colours, label values, geometry) and with our own reader (the same ids on the same grid)."""

from __future__ import annotations

from pathlib import Path

import nrrd
import numpy as np
import pytest

from smp_diffusion_encoder.data.imageio import LabelInfo
from smp_diffusion_encoder.data.io_registry import output_writer, writer_for
from smp_diffusion_encoder.data.labeled_slices import read_label_map
from smp_diffusion_encoder.data.remap import FLARE_COLORS
from smp_diffusion_encoder.data.slicer_io import SlicerSegIO
from smp_diffusion_encoder.data.volume import read_volume, write_label_map
from smp_diffusion_encoder.errors import ConfigError
from tests.data.synthetic_volumes import PERMUTED_AFFINE, synthetic_ct, synthetic_labels, write_nifti

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.mark.parametrize("affine", [np.diag([0.7, 0.8, 2.5, 1.0]), PERMUTED_AFFINE], ids=["ras", "permuted"])
def test_seg_nrrd_round_trip(affine: np.ndarray, tmp_path: Path) -> None:
    image = read_volume(write_nifti(tmp_path / "ct.nii.gz", synthetic_ct(), affine))
    labels = image.to_canonical(synthetic_labels())  # ids 1, 2, 13
    writer = output_writer("seg-nrrd")
    assert isinstance(writer, SlicerSegIO) and writer.label_ending == ".seg.nrrd" and writer.map_format == "nrrd"
    path = writer.write_labels(labels, image, tmp_path / "out" / "case.seg.nrrd", LabelInfo.flare("test model"))
    assert sorted(p.name for p in path.parent.iterdir()) == ["case.seg.nrrd"]

    # second tool: pynrrd sees a labelmap segmentation with Slicer's fields and the reference's LPS geometry
    voxels, header = nrrd.read(str(path))
    np.testing.assert_array_equal(voxels, synthetic_labels())  # file voxel order, the ids as label values
    assert header["space"] == "left-posterior-superior"
    np.testing.assert_allclose(header["space directions"], (LPS @ affine)[:3, :3].T, atol=1e-9)
    np.testing.assert_allclose(header["space origin"], (LPS @ affine)[:3, 3], atol=1e-9)
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    segments = [
        (header[f"Segment{n}_Name"], header[f"Segment{n}_LabelValue"], header[f"Segment{n}_Layer"]) for n in range(3)
    ]
    assert segments == [("Liver", "1", "0"), ("Right kidney", "2", "0"), ("Left kidney", "13", "0")]
    assert "Segment3_Name" not in header
    color = [float(v) for v in header["Segment2_Color"].split()]
    want = [int(FLARE_COLORS[13][i : i + 2], 16) / 255 for i in (1, 3, 5)]
    np.testing.assert_allclose(color, want, atol=1e-6)
    assert "Source:test model" in header["Segment0_Tags"]

    # our own readers: the same ids on the same grid
    back = read_volume(path, kind="label")
    np.testing.assert_array_equal(back.array, labels)
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-9)
    np.testing.assert_array_equal(read_label_map(path, image).volume.array, labels)


def test_seg_nrrd_through_write_label_map_and_without_organs(tmp_path: Path) -> None:
    image = read_volume(write_nifti(tmp_path / "ct.nii.gz", synthetic_ct()))
    assert isinstance(writer_for(Path("x.seg.nrrd")), SlicerSegIO)
    assert not isinstance(writer_for(Path("x.nrrd")), SlicerSegIO)
    empty = write_label_map(np.zeros(image.array.shape, np.uint8), image, tmp_path / "empty.seg.nrrd")
    voxels, header = nrrd.read(str(empty))
    assert not voxels.any() and not any(k.startswith("Segment0_") for k in header)
    np.testing.assert_array_equal(read_volume(empty, kind="label").array, 0)
    with pytest.raises(ConfigError, match="integer labels"):
        write_label_map(np.zeros(image.array.shape, np.float32), image, tmp_path / "f.seg.nrrd")
    assert not (tmp_path / "f.seg.nrrd").exists()


def test_predict_writes_seg_nrrd_with_nrrd_maps(tmp_path: Path) -> None:
    from smp_diffusion_encoder.inference.volume import VolumePrediction, _output_files, _write_case

    image = read_volume(write_nifti(tmp_path / "ct.nii.gz", synthetic_ct(), PERMUTED_AFFINE))
    labels = image.to_canonical(synthetic_labels())
    probabilities = np.stack([labels == k for k in range(14)]).astype(np.float16)
    pred = VolumePrediction(labels, probabilities, np.zeros(labels.shape, np.float32))
    written = _write_case(pred, image, tmp_path / "o", "case", "seg-nrrd", "probe")
    names = ["case_probabilities.nrrd", "case_uncertainty.nrrd", "case.seg.nrrd"]
    assert [p.name for p in written] == names
    assert sorted(_output_files(tmp_path / "o", "case", "seg-nrrd", True, True)) == sorted(written)
    np.testing.assert_array_equal(read_volume(written[-1], kind="label").array, labels)
    assert nrrd.read_header(str(written[-1]))["Segment0_Tags"].startswith("Segmentation.Status:completed|Source:")
    assert read_volume(written[1], check_hu=False).array.shape == labels.shape
