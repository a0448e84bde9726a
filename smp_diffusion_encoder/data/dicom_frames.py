"""The image frames of a DICOM folder: one per classic single-frame file, one per frame of an enhanced
multi-frame file (Enhanced CT), each with its own geometry and HU rescaling, read with pydicom.

Where each frame's attributes come from (DICOM PS3.3 C.7.6.16, "Multi-frame Functional Groups"):

=====================  =============================  ===========================================================
attribute              classic file                   enhanced multi-frame file (per-frame, else shared group)
=====================  =============================  ===========================================================
position (LPS mm)      ImagePositionPatient           PlanePositionSequence[0].ImagePositionPatient
orientation            ImageOrientationPatient        PlaneOrientationSequence[0].ImageOrientationPatient
pixel spacing (mm)     PixelSpacing                   PixelMeasuresSequence[0].PixelSpacing
HU = slope*v + inter   RescaleSlope/RescaleIntercept  PixelValueTransformationSequence[0].RescaleSlope/...Intercept
=====================  =============================  ===========================================================

Compressed pixel data is decoded by pydicom's plugins. The base install decodes JPEG baseline/extended and
JPEG 2000 (Pillow), JPEG-LS (pyjpegls) and RLE (pydicom); JPEG lossless (the common PACS syntax
1.2.840.10008.1.2.4.70) and HTJ2K need the optional ``dicom-codecs`` extra (pylibjpeg with libjpeg and
openjpeg): without it such a file raises :class:`~smp_diffusion_encoder.errors.MissingDecoderError` naming
the file, its transfer syntax and the extra to install.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from smp_diffusion_encoder.errors import CorruptFileError, DicomSeriesError, MissingDecoderError

logger = logging.getLogger(__name__)

#: The install extra with the decoder plugins for compressed DICOM (named in :class:`MissingDecoderError`).
CODECS_EXTRA = "dicom-codecs"
#: DICOM modalities of files that hold no CT image (segmentations, structure sets, reports...): skipped.
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO", "REG"})


@dataclass(eq=False)
class Frame:
    """One 2D image of a series.

    Attributes:
        path: the file.
        index: 0-based frame number in a multi-frame file, ``None`` for a single-frame file.
        dataset: the file's pydicom dataset (shared by the frames of a multi-frame file).
        position: ``ImagePositionPatient``, LPS mm of the centre of the first transmitted pixel.
        orientation: ``ImageOrientationPatient``: row direction (3), then column direction (3).
        pixel_spacing: ``(between rows, between columns)`` mm.
        rows, columns: frame size in pixels.
        slope, intercept: HU = ``slope * stored + intercept``.
    """

    path: Path
    index: int | None
    dataset: pydicom.Dataset
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    slope: float
    intercept: float

    @property
    def name(self) -> str:
        """``IM0001.dcm`` or, for a frame of a multi-frame file, ``CT.dcm frame 3`` (1-based, as DICOM counts)."""
        return self.path.name if self.index is None else f"{self.path.name} frame {self.index + 1}"

    @property
    def series_uid(self) -> str:
        return str(self.dataset.get("SeriesInstanceUID", "<no SeriesInstanceUID>"))

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.get("SOPInstanceUID", ""))

    def hu(self) -> np.ndarray:
        """``(rows, columns)`` float32 HU of this frame.

        Raises:
            MissingDecoderError: compressed with a transfer syntax no installed plugin decodes.
            CorruptFileError: the pixel data cannot be decoded.
        """
        pixels = decoded_pixels(self.dataset, self.path)
        frame = pixels if self.index is None else pixels[self.index]
        if frame.ndim != 2:
            raise DicomSeriesError(self.path, f"pixel data is {frame.shape}; expected 2D frames (one colour channel)")
        return frame.astype(np.float32) * np.float32(self.slope) + np.float32(self.intercept)


def read_frames(folder: Path) -> list[Frame]:
    """Every image frame of the DICOM files directly in ``folder`` (in file-name order; not sorted in space).

    Files that are not DICOM, DICOMDIR, and DICOM files without pixel data or of a non-image modality
    (:data:`NON_IMAGE_MODALITIES`, e.g. a DICOM SEG written next to its series) are skipped.

    Raises:
        DicomSeriesError: ``folder`` is not a folder or holds no DICOM image; a multi-frame file whose frames
            cannot be placed (no per-frame positions); a file lacking a geometry attribute.
        CorruptFileError: a DICOM file whose header cannot be read, or a truncated one (:func:`_check_complete`).
    """
    if not folder.is_dir():
        raise DicomSeriesError(folder, "is not a folder")
    frames: list[Frame] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.name.upper() == "DICOMDIR":
            continue
        try:
            ds = pydicom.dcmread(path, force=path.suffix.lower() == ".dcm")
        except InvalidDicomError:
            logger.debug("skipping non-DICOM file %s", path)
            continue
        except Exception as err:  # truncated files raise EOFError, OSError, struct errors...
            raise CorruptFileError(path, f"cannot read as DICOM ({type(err).__name__}: {err})") from err
        if str(ds.get("Modality", "")).upper() in NON_IMAGE_MODALITIES:
            logger.debug("skipping DICOM file of a non-image modality %s", path)
            continue
        _check_complete(path, ds)
        if "PixelData" not in ds:
            logger.debug("skipping DICOM file without image pixel data %s", path)
            continue
        _fill_sop_uids(ds)
        if "PerFrameFunctionalGroupsSequence" in ds:
            frames.extend(_enhanced_frames(path, ds))
        elif int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise DicomSeriesError(
                path,
                f"is a multi-frame file ({int(ds.NumberOfFrames)} frames) without per-frame positions "
                f"(PerFrameFunctionalGroupsSequence), so its frames cannot be placed in space; export the "
                f"series as single-frame files or as Enhanced CT",
            )
        else:
            frames.append(_classic_frame(path, ds))
    if not frames:
        raise DicomSeriesError(folder, "holds no DICOM image files")
    return frames


def _check_complete(path: Path, ds: pydicom.Dataset) -> None:
    """Refuse a truncated file: pydicom reads a file cut short without complaint, as a dataset that ends early
    (an image without pixel data, or with fewer pixel bytes than its header says), which would otherwise be
    skipped or reported as missing slices.

    Raises:
        CorruptFileError: an image storage file without pixel data, or with uncompressed pixel data shorter than
            ``Rows * Columns * frames * samples * BitsAllocated / 8`` bytes.
    """
    meta = getattr(ds, "file_meta", None)
    sop_class = UID(str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else "")))
    size = path.stat().st_size
    if "PixelData" not in ds:
        if "Image Storage" in sop_class.name:
            raise CorruptFileError(
                path,
                f"is truncated: a {sop_class.name} file of {size} bytes that ends before "
                f"its pixel data; copy or export it again",
            )
        return
    syntax = UID(str(meta.get("TransferSyntaxUID", ""))) if meta else UID("")
    if not syntax or syntax.is_compressed:
        return
    try:
        expected = (
            int(ds.Rows)
            * int(ds.Columns)
            * int(ds.get("NumberOfFrames", 1) or 1)
            * int(ds.get("SamplesPerPixel", 1) or 1)
            * int(ds.BitsAllocated)
            + 7
        ) // 8
    except (AttributeError, TypeError, ValueError):
        return  # the geometry checks name the missing attribute
    got = len(ds.PixelData)
    if got < expected:
        raise CorruptFileError(
            path,
            f"is truncated: its pixel data holds {got} of {expected} bytes ({size} bytes in "
            f"all); copy or export it again",
        )


def _fill_sop_uids(ds: pydicom.Dataset) -> None:
    """Some exports (e.g. anonymised test data) leave SOPClassUID/SOPInstanceUID empty although the file meta
    header holds them (they must be equal, PS3.10 7.1): fill them in, in memory, from there."""
    meta = getattr(ds, "file_meta", None)
    for keyword, meta_keyword in (
        ("SOPClassUID", "MediaStorageSOPClassUID"),
        ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
    ):
        if not str(ds.get(keyword, "") or "").strip() and meta is not None and meta.get(meta_keyword):
            setattr(ds, keyword, meta.get(meta_keyword))


def decoded_pixels(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    """The stored pixel values of a file, ``(rows, columns)`` or ``(frames, rows, columns)`` (pydicom keeps the
    decoded array with the dataset, so the frames of a multi-frame file are decoded once)."""
    syntax = UID(str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2"))
    if syntax.is_transfer_syntax and syntax.is_compressed:
        _require_decoder(syntax, path)
    try:
        return ds.pixel_array
    except Exception as err:  # truncated pixel data, broken bitstream
        raise CorruptFileError(
            path, f"cannot decode pixel data (transfer syntax {_syntax_name(syntax)}): {type(err).__name__}: {err}"
        ) from err


def _require_decoder(syntax: UID, path: Path) -> None:
    from pydicom.pixels import get_decoder

    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:  # a syntax pydicom knows no decoder for at all (private, JPEG XL...)
        raise MissingDecoderError(
            path,
            f"pixel data is compressed as {_syntax_name(syntax)}, which pydicom cannot decode; convert the "
            f"series to an uncompressed transfer syntax (e.g. with dcmdjpeg or gdcmconv --raw)",
        ) from None
    if not available:
        raise MissingDecoderError(
            path,
            f"pixel data is compressed as {_syntax_name(syntax)} and no installed decoder reads it; install the "
            f"decoder plugins with: pip install 'smp_diffusion_encoder[{CODECS_EXTRA}]' (pylibjpeg, "
            f"pylibjpeg-libjpeg, pylibjpeg-openjpeg)",
        )


def _syntax_name(syntax: UID) -> str:
    return f"{syntax.name} ({syntax})" if syntax.name != str(syntax) else str(syntax)


def _classic_frame(path: Path, ds: pydicom.Dataset) -> Frame:
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if tag not in ds:
            raise DicomSeriesError(path, f"lacks {tag}, so the slice cannot be placed in space")
    return Frame(
        path=path,
        index=None,
        dataset=ds,
        position=_floats(ds.ImagePositionPatient, 3, path, "ImagePositionPatient"),
        orientation=_floats(ds.ImageOrientationPatient, 6, path, "ImageOrientationPatient"),
        pixel_spacing=tuple(_floats(ds.PixelSpacing, 2, path, "PixelSpacing")),  # type: ignore[arg-type]
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        slope=float(ds.get("RescaleSlope", 1.0) or 1.0),
        intercept=float(ds.get("RescaleIntercept", 0.0) or 0.0),
    )


def _enhanced_frames(path: Path, ds: pydicom.Dataset) -> list[Frame]:
    per_frame = ds.PerFrameFunctionalGroupsSequence
    n = int(ds.get("NumberOfFrames", len(per_frame)) or len(per_frame))
    if len(per_frame) != n:
        raise DicomSeriesError(
            path,
            f"multi-frame file: NumberOfFrames is {n} but PerFrameFunctionalGroupsSequence has {len(per_frame)} items",
        )
    frames = []
    for i in range(n):
        position = _group_value(ds, i, "PlanePositionSequence", "ImagePositionPatient", path)
        orientation = _group_value(ds, i, "PlaneOrientationSequence", "ImageOrientationPatient", path)
        spacing = _group_value(ds, i, "PixelMeasuresSequence", "PixelSpacing", path)
        slope = _group_value(ds, i, "PixelValueTransformationSequence", "RescaleSlope", path, default=1.0)
        intercept = _group_value(ds, i, "PixelValueTransformationSequence", "RescaleIntercept", path, default=0.0)
        frames.append(
            Frame(
                path=path,
                index=i,
                dataset=ds,
                position=_floats(position, 3, path, "ImagePositionPatient"),
                orientation=_floats(orientation, 6, path, "ImageOrientationPatient"),
                pixel_spacing=tuple(_floats(spacing, 2, path, "PixelSpacing")),  # type: ignore[arg-type]
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                slope=float(slope or 1.0),
                intercept=float(intercept or 0.0),
            )
        )
    return frames


def _group_value(ds: pydicom.Dataset, i: int, sequence: str, keyword: str, path: Path, default: Any = None) -> Any:
    """A functional-group attribute of frame ``i``: its per-frame item first, then the shared one."""
    for groups in (ds.PerFrameFunctionalGroupsSequence[i], _shared(ds)):
        if groups is not None and sequence in groups and len(groups[sequence].value) and keyword in groups[sequence][0]:
            return groups[sequence][0][keyword].value
    if default is not None:
        return default
    raise DicomSeriesError(
        path,
        f"multi-frame file: frame {i + 1} has no {sequence} > {keyword} (per-frame or "
        f"shared), so it cannot be placed in space",
    )


def _shared(ds: pydicom.Dataset) -> pydicom.Dataset | None:
    shared = ds.get("SharedFunctionalGroupsSequence")
    return shared[0] if shared else None


def _floats(value: Any, n: int, path: Path, keyword: str) -> np.ndarray:
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DicomSeriesError(path, f"{keyword} {value!r} is not {n} numbers") from err
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise DicomSeriesError(path, f"{keyword} {value!r} is not {n} finite numbers")
    return out
