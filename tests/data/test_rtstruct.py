"""``--output-format rtstruct``: an RT Structure Set referencing the source series, read back with rt-utils (the
masks) and with pydicom (the references, ROI names and colours, every contour point on its organ's pixels)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from smp_diffusion_encoder.data.dicom import series_geometry
from smp_diffusion_encoder.data.dicom_seg import labels_on_frames
from smp_diffusion_encoder.data.imageio import LabelInfo
from smp_diffusion_encoder.data.io_registry import output_writer
from smp_diffusion_encoder.data.remap import FLARE_COLORS
from smp_diffusion_encoder.data.rtstruct import RtStructIO, write_rtstruct
from smp_diffusion_encoder.data.volume import Volume, read_volume
from smp_diffusion_encoder.errors import ConfigError, GeometryWarning
from tests.data.synthetic_volumes import synthetic_ct, write_dicom_series, write_nifti

RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
NAMES = {1: "Liver", 2: "Right kidney", 5: "Aorta", 13: "Left kidney"}


@pytest.fixture
def rt_utils():
    return pytest.importorskip("rt_utils")


def organs(shape: tuple[int, int, int]) -> np.ndarray:
    """(Z, Y, X) FLARE ids as blocks of several pixels a side (contours are polygons through pixel centres)."""
    labels = np.zeros(shape, np.uint8)
    labels[0:4, 2:10, 1:8] = 1
    labels[1:3, 12:18, 2:7] = 2
    labels[2:5, 11:19, 9:14] = 13
    labels[4, 3:7, 3:6] = 5
    return labels


def series(folder: Path, pixel_spacing=(0.7, 0.7), columns: int = 20) -> Path:
    """A 20-row axial series of 5 slices (square images by default: rt-utils 1.2.7 reads masks back as
    (Columns, Rows, slices) arrays indexed [row, column], which only square images survive)."""
    ct = synthetic_ct((20, columns, 5)).astype(np.float64)
    return write_dicom_series(folder, ct, pixel_spacing=pixel_spacing)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def assert_contours_on_organ_pixels(ds: pydicom.Dataset, vol: Volume, labels: np.ndarray) -> None:
    """Every contour point, placed back with its slice's own geometry, is the centre of a pixel of its organ (the
    label-map voxel at that pixel's centre), and every slice holding an organ has a contour of it."""
    frames, _ = series_geometry(vol.source)
    on_frames = labels_on_frames(labels, vol, frames)
    slice_of = {f.sop_instance_uid: (k, f) for k, f in enumerate(frames)}
    contoured = set()
    flare_of = {int(r.ROINumber): int(r.ROIDescription.split()[-1]) for r in ds.StructureSetROISequence}
    for roi in ds.ROIContourSequence:
        flare_id = flare_of[int(roi.ReferencedROINumber)]
        for contour in roi.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            k, frame = slice_of[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            points = np.asarray(contour.ContourData, float).reshape(-1, 3) - frame.position
            dr, dc = frame.pixel_spacing
            col = points @ frame.orientation[:3] / dc
            row = points @ frame.orientation[3:] / dr
            np.testing.assert_allclose(points @ np.cross(frame.orientation[:3], frame.orientation[3:]), 0, atol=1e-3)
            np.testing.assert_allclose([col, row], np.rint([col, row]), atol=1e-3)
            assert (on_frames[k][np.rint(row).astype(int), np.rint(col).astype(int)] == flare_id).all()
            contoured.add((k, flare_id))
    assert contoured == {(k, int(v)) for k in range(len(frames)) for v in np.unique(on_frames[k]) if v}


def test_rtstruct_reads_back_with_rt_utils_and_pydicom(rt_utils, tmp_path: Path) -> None:
    folder = series(tmp_path / "ct")
    vol = read_volume(folder)
    labels = organs(vol.array.shape)
    writer = output_writer("rtstruct")
    assert isinstance(writer, RtStructIO) and writer.label_ending == "_rtstruct.dcm" and writer.map_format == "nifti"
    path = writer.write_labels(labels, vol, tmp_path / "out" / "ct_rtstruct.dcm", LabelInfo.flare("probe x"))
    assert [p.name for p in path.parent.iterdir()] == ["ct_rtstruct.dcm"]

    # rt-utils: the ROIs by name, masks (rows, cols, slices) in its slice order ~ the written labels
    rt = rt_utils.RTStructBuilder.create_from(dicom_series_path=str(folder), rt_struct_path=str(path))
    assert rt.get_roi_names() == list(NAMES.values())
    k_of = {f.sop_instance_uid: k for k, f in enumerate(series_geometry(folder)[0])}
    order = [k_of[str(ds.SOPInstanceUID)] for ds in rt.series_data]
    for flare_id, name in NAMES.items():
        mask = np.transpose(rt.get_roi_mask_by_name(name), (2, 0, 1))  # -> (slices, rows, cols)
        want = labels[order] == flare_id  # axial LPS series: canonical (Z, Y, X) is (slice, row, column)
        assert dice(mask, want) > 0.9, name

    # pydicom: an RTSTRUCT referencing the source series, frame of reference and study; names, colours
    ds = pydicom.dcmread(path)
    source = pydicom.dcmread(next(folder.iterdir()))
    assert ds.SOPClassUID == RTSTRUCT and ds.Modality == "RTSTRUCT"
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID
    ref = ds.ReferencedFrameOfReferenceSequence[0]
    assert ref.FrameOfReferenceUID == source.FrameOfReferenceUID
    referenced = ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ContourImageSequence} == set(k_of)
    assert [r.ROIName for r in ds.StructureSetROISequence] == list(NAMES.values())
    assert all(r.ROIGenerationAlgorithm == "AUTOMATIC" for r in ds.StructureSetROISequence)
    assert all(r.RTROIInterpretedType == "ORGAN" for r in ds.RTROIObservationsSequence)
    for roi, flare_id in zip(ds.ROIContourSequence, NAMES):
        assert [int(v) for v in roi.ROIDisplayColor] == [int(FLARE_COLORS[flare_id][i : i + 2], 16) for i in (1, 3, 5)]
    assert ds.ManufacturerModelName == "probe x"
    assert_contours_on_organ_pixels(ds, vol, labels)


def test_rtstruct_contours_with_non_square_pixels_are_placed_exactly(rt_utils, tmp_path: Path) -> None:
    """rt-utils 1.2.7 scales columns by the row spacing; the written points use each slice's true geometry."""
    folder = series(tmp_path / "ct", pixel_spacing=(0.8, 0.6), columns=16)
    vol = read_volume(folder)
    labels = organs(vol.array.shape)
    path = write_rtstruct(labels, vol, tmp_path / "ct_rtstruct.dcm")
    assert_contours_on_organ_pixels(pydicom.dcmread(path), vol, labels)


def test_rtstruct_of_a_tilted_series_contours_the_acquired_pixels(rt_utils, tmp_path: Path) -> None:
    """rt-utils 1.2.7 stacks slices along the first slice's normal; the points use each slice's own position."""
    theta = np.radians(20.0)
    folder = write_dicom_series(
        tmp_path / "tilt",
        synthetic_ct((20, 20, 5)).astype(np.float64),
        orientation=(1.0, 0.0, 0.0, 0.0, float(np.cos(theta)), -float(np.sin(theta))),
        slice_direction=(0.0, 0.0, 1.0),
        slice_positions=[0.8 / np.sin(theta) * k for k in range(5)],
    )
    with pytest.warns(GeometryWarning):
        vol = read_volume(folder)
    labels = organs(vol.array.shape)
    path = write_rtstruct(labels, vol, tmp_path / "tilt_rtstruct.dcm")
    assert_contours_on_organ_pixels(pydicom.dcmread(path), vol, labels)


def test_rtstruct_of_a_deidentified_series(rt_utils, tmp_path: Path) -> None:
    folder = series(tmp_path / "ct")
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        for keyword in ("PatientName", "StudyDate", "StudyTime", "StudyID", "PatientBirthDate", "PatientSex"):
            delattr(ds, keyword)
        ds.save_as(f, enforce_file_format=True)
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    vol = read_volume(folder)
    path = write_rtstruct(organs(vol.array.shape), vol, tmp_path / "a_rtstruct.dcm")  # rt-utils: AttributeError
    ds = pydicom.dcmread(path)
    assert ds.StudyDate == "" and str(ds.PatientName) == "" and len(ds.StructureSetROISequence) == 4
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before


def test_rtstruct_needs_dicom_inputs(rt_utils, tmp_path: Path) -> None:
    nifti = write_nifti(tmp_path / "ct_0000.nii.gz", synthetic_ct())
    with pytest.raises(ConfigError, match="rtstruct needs DICOM series folders as inputs"):
        output_writer("rtstruct").check_outputs([nifti], 14)
    with pytest.raises(ConfigError, match="needs a DICOM series folder"):
        write_rtstruct(np.zeros((8, 20, 24), np.uint8), read_volume(nifti), tmp_path / "x_rtstruct.dcm")
    assert not (tmp_path / "x_rtstruct.dcm").exists()


def test_rtstruct_without_rt_utils_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "rt_utils", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"rtstruct needs rt-utils.*smp_diffusion_encoder\[rtstruct\]"):
        output_writer("rtstruct").check_outputs([tmp_path], 14)


def test_predict_writes_rtstruct_with_nifti_maps(rt_utils, tmp_path: Path) -> None:
    from smp_diffusion_encoder.inference.volume import VolumePrediction, _output_files, _write_case

    vol = read_volume(series(tmp_path / "ct"))
    labels = organs(vol.array.shape)
    pred = VolumePrediction(labels, None, np.zeros(labels.shape, np.float32))
    written = _write_case(pred, vol, tmp_path / "o", "ct", "rtstruct", "probe")
    assert [p.name for p in written] == ["ct_uncertainty.nii.gz", "ct_rtstruct.dcm"]
    assert sorted(_output_files(tmp_path / "o", "ct", "rtstruct", False, True)) == sorted(written)
    assert pydicom.dcmread(written[-1]).ManufacturerModelName == "smp_diffusion_encoder probe"
