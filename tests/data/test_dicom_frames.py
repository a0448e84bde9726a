"""DICOM frames as they come: enhanced multi-frame CT, compressed transfer syntaxes, missing decoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLosslessSV1, RLELossless

from smp_diffusion_encoder.data.dicom_frames import CODECS_EXTRA, read_frames
from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.errors import CorruptFileError, DicomSeriesError, MissingDecoderError
from tests.data.synthetic_volumes import write_dicom_series


def unique_hu() -> np.ndarray:
    return (np.arange(12 * 10 * 5).reshape(12, 10, 5) - 1000).astype(np.int16)


def test_enhanced_multiframe_ct_reads_like_the_single_frame_series(tmp_path: Path) -> None:
    hu = unique_hu()
    single = read_volume(write_dicom_series(tmp_path / "single", hu))
    folder = write_dicom_series(tmp_path / "enhanced", hu, multiframe=True)
    assert [p.name for p in folder.iterdir()] == ["enhanced.dcm"]
    frames = read_frames(folder)
    assert len(frames) == 5 and frames[0].name == "enhanced.dcm frame 1"
    multi = read_volume(folder)
    np.testing.assert_array_equal(multi.array, single.array)
    np.testing.assert_allclose(multi.canonical_affine, single.canonical_affine, atol=1e-6)


def test_enhanced_multiframe_with_a_missing_frame_is_refused(tmp_path: Path) -> None:
    folder = write_dicom_series(tmp_path / "mf", unique_hu(), multiframe=True, skip=(2,))
    with pytest.raises(DicomSeriesError, match=r"mf: missing slices: .*enhanced\.dcm frame \d -> enhanced\.dcm frame"):
        read_volume(folder)


def test_multiframe_without_per_frame_positions_is_refused_naming_the_file(tmp_path: Path) -> None:
    folder = write_dicom_series(tmp_path / "legacy", unique_hu(), multiframe=True)
    path = folder / "enhanced.dcm"
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence
    ds.save_as(path)
    with pytest.raises(
        DicomSeriesError,
        match=rf"^{path}: is a multi-frame file \(5 frames\) without per-frame "
        r"positions",
    ):
        read_volume(folder)


def test_rle_compressed_series_reads_exactly(tmp_path: Path) -> None:
    hu = unique_hu()
    plain = read_volume(write_dicom_series(tmp_path / "plain", hu))
    rle = read_volume(write_dicom_series(tmp_path / "rle", hu, transfer_syntax=RLELossless))
    np.testing.assert_array_equal(rle.array, plain.array)


def test_jpeg_lossless_without_decoder_names_the_extra(tmp_path: Path) -> None:
    """The common PACS syntax needs pylibjpeg-libjpeg (or gdcm): missing, the error says what to install;
    installed, the placeholder bitstream is reported as corrupt. Either way the file is named."""
    folder = write_dicom_series(tmp_path / "jpegll", unique_hu(), transfer_syntax=JPEGLosslessSV1)
    if get_decoder(JPEGLosslessSV1).is_available:
        with pytest.raises(
            CorruptFileError,
            match=r"IM\d+\.dcm: cannot decode pixel data \(transfer syntax JPEG "
            r"Lossless",
        ):
            read_volume(folder)
        return
    with pytest.raises(MissingDecoderError) as info:
        read_volume(folder)
    message = str(info.value)
    assert message.startswith(str(folder / "IM")) and "JPEG Lossless" in message and "1.2.840.10008.1.2.4.70" in message
    assert f"pip install 'smp_diffusion_encoder[{CODECS_EXTRA}]'" in message
    assert not isinstance(info.value, CorruptFileError)


def test_syntax_pydicom_cannot_decode_is_named(tmp_path: Path) -> None:
    folder = write_dicom_series(tmp_path / "mpeg", unique_hu(), transfer_syntax="1.2.840.10008.1.2.4.100")
    with pytest.raises(
        MissingDecoderError,
        match=r"IM\d+\.dcm: pixel data is compressed as MPEG2 Main Profile / "
        r"Main Level \(1\.2\.840\.10008\.1\.2\.4\.100\), which pydicom "
        r"cannot decode",
    ):
        read_volume(folder)


def test_segmentation_next_to_the_series_is_skipped(tmp_path: Path) -> None:
    folder = write_dicom_series(tmp_path / "s", unique_hu())
    ds = pydicom.dcmread(next(folder.iterdir()))
    ds.Modality, ds.SeriesInstanceUID = "SEG", "1.2.3"
    ds.save_as(folder / "seg.dcm")
    assert len(read_frames(folder)) == 5
