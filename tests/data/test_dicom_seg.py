"""DICOM SEG output: reads back with pydicom/highdicom, references the source series, and every segment frame
sits on its source slice with that slice's labels (plain, gantry-tilted and enhanced multi-frame series)."""

from __future__ import annotations

import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import SegmentationStorage

from smp_diffusion_encoder.data.dicom import series_geometry
from smp_diffusion_encoder.data.dicom_seg import write_dicom_seg
from smp_diffusion_encoder.data.remap import FLARE_LABELS
from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.errors import ConfigError, DicomSeriesError, GeometryWarning
from tests.data.synthetic_volumes import write_dicom_series, write_nifti


def unique_hu(rows: int = 12, cols: int = 10, slices: int = 5) -> np.ndarray:
    return (np.arange(rows * cols * slices).reshape(rows, cols, slices) - 1000).astype(np.int16)


def organ_blocks(shape: tuple[int, int, int]) -> np.ndarray:
    """(Z, Y, X) FLARE ids: liver, right kidney, left kidney, aorta in distinct, asymmetric places."""
    labels = np.zeros(shape, np.uint8)
    labels[0:3, 1:5, 1:4] = 1
    labels[1:2, 6:9, 2:4] = 2
    labels[2:5, 7:11, 6:9] = 13
    labels[4, 0:2, 0:2] = 5
    return labels


def source_pixels(seg: pydicom.Dataset, n: int) -> tuple[str, int | None, np.ndarray]:
    """The referenced SOPInstanceUID and frame number of SEG frame ``n``, and its position (LPS mm)."""
    item = seg.PerFrameFunctionalGroupsSequence[n]
    ref = item.DerivationImageSequence[0].SourceImageSequence[0]
    frame = int(ref.ReferencedFrameNumber) if "ReferencedFrameNumber" in ref else None
    return ref.ReferencedSOPInstanceUID, frame, np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)


def assert_frames_on_source_slices(seg_path: Path, folder: Path, expected: dict[tuple[str, int | None], np.ndarray]):
    """Every SEG frame references a source frame, sits at its IPP, and holds exactly ``expected`` (labels of that
    source frame in its own rows/columns) for its segment; every organ pixel of every slice is in some frame."""
    seg = pydicom.dcmread(seg_path)
    assert seg.SOPClassUID == SegmentationStorage and seg.Modality == "SEG"
    frames, _ = series_geometry(folder)
    by_ref = {(f.sop_instance_uid, None if f.index is None else f.index + 1): f for f in frames}
    first = frames[0].dataset
    for key in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName"):
        assert seg[key].value == first[key].value
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    flare_of = {int(s.SegmentNumber): int(s.SegmentDescription.split()[-1]) for s in seg.SegmentSequence}
    covered = {key: np.zeros_like(v) for key, v in expected.items()}
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    for n in range(int(seg.NumberOfFrames)):
        uid, frame_number, ipp = source_pixels(seg, n)
        source = by_ref[(uid, frame_number)]
        np.testing.assert_allclose(ipp, source.position, atol=1e-4)
        number = int(seg.PerFrameFunctionalGroupsSequence[n].SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        want = expected[(uid, frame_number)] == flare_of[number]
        np.testing.assert_array_equal(pixels[n].astype(bool), want)
        covered[(uid, frame_number)][want] = flare_of[number]
    for key, want in expected.items():
        np.testing.assert_array_equal(covered[key], want)
    return seg


def test_seg_of_a_plain_series(tmp_path: Path) -> None:
    folder = write_dicom_series(tmp_path / "ct", unique_hu())
    vol = read_volume(folder)
    labels = organ_blocks(vol.array.shape)
    path = write_dicom_seg(labels, vol, tmp_path / "out" / "case.dcm")
    frames, _ = series_geometry(folder)  # sorted inferior -> superior: canonical slice k (axial LPS series)
    expected = {(f.sop_instance_uid, None): labels[k] for k, f in enumerate(frames)}
    seg = assert_frames_on_source_slices(path, folder, expected)
    names = [(s.SegmentNumber, s.SegmentLabel) for s in seg.SegmentSequence]
    assert names == [(1, "liver"), (2, "right kidney"), (3, "aorta"), (4, "left kidney")]
    kidney = seg.SegmentSequence[3].SegmentedPropertyTypeCodeSequence[0]
    assert (kidney.CodeValue, kidney.CodingSchemeDesignator) == ("64033007", "SCT")
    assert kidney.SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning == "Left"
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {f.sop_instance_uid for f in frames}
    # highdicom reads it as a segmentation, with the source instances it segments
    back = hd.seg.segread(path)
    assert back.number_of_segments == 4 and back.segmentation_type == hd.seg.SegmentationTypeValues.BINARY
    assert [p.name for p in path.parent.iterdir()] == ["case.dcm"]


def test_seg_of_a_tilted_series_lands_on_the_acquired_pixels(tmp_path: Path) -> None:
    theta = np.radians(20.0)
    orientation = (1.0, 0.0, 0.0, 0.0, float(np.cos(theta)), -float(np.sin(theta)))
    hu = unique_hu()
    folder = write_dicom_series(
        tmp_path / "tilt",
        hu,
        orientation=orientation,
        slice_direction=(0.0, 0.0, 1.0),
        slice_positions=[0.8 / np.sin(theta) * k for k in range(5)],
    )
    with pytest.warns(GeometryWarning):
        vol = read_volume(folder)
    labels = np.zeros(vol.array.shape, np.uint8)
    targets = {(3, 4, 2): 1, (11, 9, 0): 3, (0, 0, 4): 9}  # DICOM (row, column, slice) -> FLARE id
    for (r, c, k), flare_id in targets.items():
        labels[vol.array == hu[r, c, k]] = flare_id  # the voxel holding that acquired pixel
    path = write_dicom_seg(labels, vol, tmp_path / "tilt.dcm")
    frames, _ = series_geometry(folder)
    expected = {}
    for k, f in enumerate(frames):
        want = np.zeros((12, 10), np.uint8)
        for (r, c, kk), flare_id in targets.items():
            if kk == k:
                want[r, c] = flare_id
        expected[(f.sop_instance_uid, None)] = want
    assert_frames_on_source_slices(path, folder, expected)


def test_seg_of_an_enhanced_multiframe_series_references_frame_numbers(tmp_path: Path) -> None:
    folder = write_dicom_series(tmp_path / "mf", unique_hu(), multiframe=True)
    vol = read_volume(folder)
    labels = organ_blocks(vol.array.shape)
    path = write_dicom_seg(labels, vol, tmp_path / "mf.dcm")
    frames, _ = series_geometry(folder)
    expected = {(f.sop_instance_uid, f.index + 1): labels[k] for k, f in enumerate(frames)}
    assert_frames_on_source_slices(path, folder, expected)


def test_seg_needs_a_dicom_input_and_an_organ(tmp_path: Path) -> None:
    nifti = read_volume(write_nifti(tmp_path / "ct.nii.gz", unique_hu().astype(np.int16)))
    with pytest.raises(ConfigError, match=r"DICOM SEG output needs a DICOM series folder as input .* ct\.nii\.gz"):
        write_dicom_seg(np.ones(nifti.array.shape, np.uint8), nifti, tmp_path / "x.dcm")
    vol = read_volume(write_dicom_series(tmp_path / "ct", unique_hu()))
    with pytest.raises(ConfigError, match=r"no organ in the label map"):
        write_dicom_seg(np.zeros(vol.array.shape, np.uint8), vol, tmp_path / "x.dcm")
    with pytest.raises(ConfigError, match=r"FLARE ids 1\.\.13 only; labels hold \[14\]"):
        write_dicom_seg(np.full(vol.array.shape, 14, np.uint8), vol, tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


def test_every_flare_organ_has_a_snomed_code(tmp_path: Path) -> None:
    vol = read_volume(write_dicom_series(tmp_path / "ct", unique_hu(rows=14, cols=14, slices=2)))
    labels = np.zeros(vol.array.shape, np.uint8)
    labels[0].flat[:13] = np.arange(1, 14)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # highdicom warns about codes it does not know
        seg = pydicom.dcmread(write_dicom_seg(labels, vol, tmp_path / "all.dcm"))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [FLARE_LABELS[i] for i in range(1, 14)]
    sides = {
        s.SegmentLabel: s.SegmentedPropertyTypeCodeSequence[0].get("SegmentedPropertyTypeModifierCodeSequence")
        for s in seg.SegmentSequence
    }
    assert [k for k, v in sides.items() if v] == [
        "right kidney",
        "right adrenal gland",
        "left adrenal gland",
        "left kidney",
    ]


def test_seg_of_the_real_demo_series(tmp_path: Path) -> None:
    """The packaged demo scan (Siemens, JPEG 2000 lossless, decoded by Pillow in the base install) and its
    label map: every organ pixel of every slice is in the SEG frame of that slice.

    Its files, as published, had empty SOP class/instance, study and series UIDs; the shipped copies carry
    UIDs derived deterministically from the case name (pixel data untouched). A series without them is
    refused, naming the file and the UIDs."""
    from smp_diffusion_encoder.data.volume import check_pair

    case = Path(__file__).resolve().parents[2] / "smp_diffusion_encoder/demo_data/test/REALCT_Ts_0001"
    series = case / "dicom"
    image = read_volume(series)
    label = read_volume(case / "label.nii.gz", kind="label")
    check_pair(image, label)
    path = write_dicom_seg(label.array, image, tmp_path / "demo_seg.dcm")
    blank = tmp_path / "dicom"
    blank.mkdir()
    for src in series.iterdir():
        ds = pydicom.dcmread(src)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "", ""
        ds.save_as(blank / src.name)
    with pytest.raises(
        DicomSeriesError,
        match=r"dicom: CT\.\S+ has no StudyInstanceUID, SeriesInstanceUID \(empty "
        r"in the file\), which a DICOM SEG must reference",
    ):
        write_dicom_seg(label.array, read_volume(blank), tmp_path / "blank_seg.dcm")
    frames, _ = series_geometry(series)
    assert frames[0].dataset.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    expected = {(f.sop_instance_uid, None): label.array[k] for k, f in enumerate(frames)}
    seg = assert_frames_on_source_slices(path, series, expected)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [FLARE_LABELS[i] for i in np.unique(label.array) if i]


#: Attributes de-identifiers delete (Type 2: may be empty, must be present).
DEIDENTIFIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
    "SliceThickness",
)


def deidentify(folder: Path) -> Path:
    """Delete (not empty) the Type 2 attributes, as anonymisers often do."""
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        for keyword in DEIDENTIFIED:
            delattr(ds, keyword)
        ds.save_as(f, enforce_file_format=True)
    return folder


def dciodvfy_errors(path: Path) -> list[str]:
    """The error lines of dciodvfy (Debian's dicom3tools), the reference DICOM validator."""
    import shutil
    import subprocess

    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (apt-get install dicom3tools) is not installed")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def test_seg_of_a_plain_series_is_valid_dicom(tmp_path: Path) -> None:
    vol = read_volume(write_dicom_series(tmp_path / "ct", unique_hu()))
    assert dciodvfy_errors(write_dicom_seg(organ_blocks(vol.array.shape), vol, tmp_path / "seg.dcm")) == []


def test_seg_of_a_deidentified_series_has_the_type2_attributes_empty(tmp_path: Path) -> None:
    folder = deidentify(write_dicom_series(tmp_path / "ct", unique_hu()))
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    vol = read_volume(folder)
    labels = organ_blocks(vol.array.shape)
    path = write_dicom_seg(labels, vol, tmp_path / "out" / "case.dcm")  # AttributeError: no PatientName
    seg = pydicom.dcmread(path)
    for keyword in DEIDENTIFIED[:-1]:
        assert keyword in seg and not seg[keyword].value, keyword
    thickness = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness
    assert float(thickness) == pytest.approx(2.5)  # the slice spacing, as dcmqi writes it
    frames, _ = series_geometry(folder)
    assert hd.seg.segread(path).number_of_segments == 4
    assert dciodvfy_errors(path) == []
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before  # the user's files are untouched
    assert all(k not in f.dataset for f in frames for k in DEIDENTIFIED)


def test_a_source_highdicom_refuses_is_a_dicom_series_error(tmp_path: Path, monkeypatch) -> None:
    """Not an AttributeError escaping the CLI (exit 1, and --keep-going lost the good series)."""
    import smp_diffusion_encoder.data.dicom_seg as dicom_seg

    def refuse(*args, **kwargs):
        raise AttributeError("'FileDataset' object has no attribute 'Something'")

    monkeypatch.setattr(dicom_seg, "_segmentation", refuse)
    vol = read_volume(write_dicom_series(tmp_path / "ct", unique_hu()))
    with pytest.raises(DicomSeriesError, match=r"ct: cannot be referenced by a DICOM SEG \(AttributeError: "):
        write_dicom_seg(organ_blocks(vol.array.shape), vol, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()
