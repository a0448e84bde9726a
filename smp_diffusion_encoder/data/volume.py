"""Reading and writing CT volumes and label maps: the project's one I/O contract.

Every volume, whatever its file's voxel order, comes out of :func:`read_volume` in one **canonical
orientation** so that slices from differently stored files look alike:

* ``Volume.array`` has axes ``(Z, Y, X)``; axial slice ``k`` is ``array[k]`` (rows ``Y``, columns ``X``).
* ``X`` (columns) runs from the patient's right to the patient's left, ``Y`` (rows) from anterior to
  posterior, ``Z`` (slices) from inferior to superior. In NIfTI/nibabel axis codes the voxel axes
  ``(x, y, z)`` are ``("L", "P", "S")``.
* Shown with row 0 at the top (``plt.imshow(array[k])``) this is the radiological display every CT viewer
  uses: anterior at the top, the patient's right on the image's left, looking up from the feet.

The voxel axes are only permuted and flipped (to the closest of the file's axes for oblique scans, never
resampled), so reading and writing are exact inverses: :func:`write_label_map` and
:func:`write_volume_like` undo the reorientation and write a NIfTI file with exactly the reference's shape,
voxel order, affine and qform/sform codes (or a NRRD/MHA file with its grid). Files: whatever the table of
formats reads and writes (:mod:`~smp_diffusion_encoder.data.io_registry`: NIfTI, NRRD and MetaImage, DICOM series
folders; a gantry-tilted series is the one input that is resampled, see
:mod:`~smp_diffusion_encoder.data.dicom_geometry`). Units: image voxels are Hounsfield units (HU), spacings and
affines millimetres (world coordinates RAS+, the NIfTI convention).

Example:
    >>> from importlib.resources import files
    >>> case = files("smp_diffusion_encoder") / "demo_data" / "train" / "REALCT_Tr_0001"  # shipped demo CT
    >>> vol = read_volume(case / "image.nii.gz")
    >>> vol.array.shape, vol.spacing                               # (Z, Y, X) voxels, mm
    ((112, 101, 122), (3.0, 3.0, 3.0))
    >>> labels = read_volume(case / "label.nii.gz", kind="label").array
    >>> write_label_map(labels, vol, "case.nii.gz")                # the reference's exact geometry
    PosixPath('case.nii.gz')
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt_lib
from nibabel.volumeutils import array_to_file, seek_tell
from numpy.typing import DTypeLike

from smp_diffusion_encoder._io import atomic_path
from smp_diffusion_encoder.data.imageio import LabelInfo
from smp_diffusion_encoder.data.io_registry import (
    VOLUME_SUFFIXES,
    is_volume_file,
    reader_for,
    strip_volume_suffix,
    writer_for,
)
from smp_diffusion_encoder.data.nifti_header import check_qform_sform
from smp_diffusion_encoder.errors import (
    ConfigError,
    CorruptFileError,
    InputFileError,
    InvalidVolumeError,
    LabelMismatchError,
)

logger = logging.getLogger(__name__)

VolumeKind = Literal["image", "label"]

#: Canonical voxel axes (x, y, z) as NIfTI axis codes: x -> patient left, y -> posterior, z -> superior.
CANONICAL_AXCODES: tuple[str, str, str] = ("L", "P", "S")
_CANONICAL_ORNT = ornt_lib.axcodes2ornt(CANONICAL_AXCODES)
#: Tolerance (mm) when comparing the geometry of an image and its label map.
GEOMETRY_TOLERANCE_MM: float = 1e-3


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D volume in canonical orientation plus what is needed to write results back exactly.

    Attributes:
        array: ``(Z, Y, X)`` voxels, canonical orientation (see module docstring). ``float32`` HU for
            images; ``uint8`` for label maps (``uint16``, ``int64`` when ids exceed 255, 65535).
        spacing: ``(z, y, x)`` voxel size in mm, in the order of ``array``'s axes.
        affine: 4x4 voxel -> world (RAS mm) matrix of the ORIGINAL file's voxel grid (file voxel order).
        source: the NIfTI file or DICOM series folder it came from (``None`` if built in memory).
        header: the original NIfTI header (built from the DICOM tags for DICOM series); its qform/sform
            and voxel order are reused verbatim when writing.
        original_shape: the file's 3D shape in file voxel order, e.g. ``(512, 512, 90)``.
        ornt: nibabel orientation transform from the file's voxel axes to the canonical ``(x, y, z)`` axes.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    source: Path | None
    header: nib.Nifti1Header
    original_shape: tuple[int, int, int]
    ornt: np.ndarray

    @property
    def name(self) -> str:
        """File or folder name for messages (``"<memory>"`` when there is no source)."""
        return self.source.name if self.source is not None else "<memory>"

    @property
    def canonical_affine(self) -> np.ndarray:
        """4x4 matrix mapping canonical voxel indices ``(x, y, z, 1)`` (i.e. ``array[z, y, x]``) to RAS mm."""
        return self.affine @ ornt_lib.inv_ornt_aff(self.ornt, self.original_shape)

    def to_canonical(self, data: np.ndarray) -> np.ndarray:
        """File-order ``(i, j, k[, c])`` data -> canonical ``(Z, Y, X)`` (or ``(C, Z, Y, X)``)."""
        return _to_canonical(data, self.ornt)

    def to_original(self, array: np.ndarray, *, contiguous: bool = True) -> np.ndarray:
        """Canonical ``(Z, Y, X)`` (or ``(C, Z, Y, X)``) -> file voxel order ``(i, j, k[, c])``; exact inverse.
        ``contiguous=False``: a view of ``array`` (no copy)."""
        xyz = np.moveaxis(array, (-1, -2, -3), (0, 1, 2))  # (Z,Y,X) -> (X,Y,Z), channel axis last
        inverse = np.empty_like(self.ornt)
        for file_axis, (canonical_axis, flip) in enumerate(self.ornt):
            inverse[int(canonical_axis)] = (file_axis, flip)
        data = ornt_lib.apply_orientation(xyz, inverse)
        return np.ascontiguousarray(data) if contiguous else data


def read_volume(path: str | os.PathLike[str], *, kind: VolumeKind = "image", check_hu: bool = True) -> Volume:
    """Read a volume file or a DICOM series folder into a canonical :class:`Volume`, with the reader the table
    of formats picks (:func:`~smp_diffusion_encoder.data.io_registry.reader_for`: NIfTI ``.nii``/``.nii.gz``,
    NRRD ``.nrrd``/``.nhdr`` and MetaImage ``.mha``/``.mhd`` via SimpleITK, DICOM folders via pydicom). Every
    format gets the same checks and the same canonical orientation.

    ``kind="image"``: ``float32`` HU with the file's ``scl_slope``/``scl_inter`` (DICOM ``RescaleSlope``/
    ``RescaleIntercept``) applied; checked with :func:`check_ct_hu` unless ``check_hu=False``.
    ``kind="label"``: non-negative integer ids, ``uint8`` when they all fit.

    Raises:
        CorruptFileError: truncated or undecodable file.
        InvalidVolumeError: not 3D, NaN/Inf voxels, non-integer labels, not CT in HU.
        DicomSeriesError, MissingDecoderError: see :func:`smp_diffusion_encoder.data.dicom.read_dicom_series`.

    Warns:
        GeometryWarning: a NIfTI file's qform and sform disagree; a DICOM series' gantry tilt was corrected.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "does not exist")
    img = reader_for(path).read(path)
    volume = volume_from_nifti(img, path, kind=kind)
    if kind == "image" and check_hu:
        check_ct_hu(volume)
    return volume


def volume_from_nifti(img: nib.Nifti1Image, source: Path | None, *, kind: VolumeKind) -> Volume:
    """Validate an in-memory NIfTI image and reorient it to a canonical :class:`Volume`."""
    where = source if source is not None else "<memory>"
    try:
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, zlib.error, ValueError) as err:
        raise CorruptFileError(where, f"cannot read the voxel data ({err}); is the file truncated?") from err
    if data.ndim > 3 and all(n == 1 for n in data.shape[3:]):
        data = data.reshape(data.shape[:3])
    if data.ndim != 3:
        shape = "x".join(map(str, data.shape))
        raise InvalidVolumeError(where, f"is {data.ndim}D ({shape}); expected one 3D volume")
    if kind == "image":
        array = data.astype(np.float32, copy=False)
    elif kind == "label":
        array = _as_label_ids(data, where)
    else:
        raise ConfigError(f"kind must be 'image' or 'label', got {kind!r}")
    _check_finite(array, where)
    check_qform_sform(img, where)
    affine = np.array(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InvalidVolumeError(where, f"has a degenerate voxel-to-world affine:\n{affine}")
    if int(img.header["qform_code"]) == 0 and int(img.header["sform_code"]) == 0:
        logger.warning("%s: qform and sform codes are 0; orientation is a guess from the voxel sizes", where)
    ornt = ornt_lib.ornt_transform(ornt_lib.io_orientation(affine), _CANONICAL_ORNT)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))  # mm per file voxel axis
    per_axis = {int(ornt[i, 0]): float(zooms[i]) for i in range(3)}
    header = img.header.copy()
    # nibabel moves scl_slope/scl_inter from the header into the data proxy on load: put them back, so the
    # header says how the voxels were stored (check_ct_hu reads it; writers reset it).
    slope, inter = getattr(img.dataobj, "slope", None), getattr(img.dataobj, "inter", None)
    if slope is not None and inter is not None:
        header.set_slope_inter(float(slope), float(inter))
    return Volume(
        array=_to_canonical(array, ornt),
        spacing=(per_axis[2], per_axis[1], per_axis[0]),
        affine=affine,
        source=source,
        header=header,
        original_shape=tuple(int(n) for n in data.shape),  # type: ignore[arg-type]
        ornt=ornt,
    )


def check_ct_hu(volume: Volume) -> None:
    """Refuse volumes that do not look like CT in Hounsfield units (8-bit exports, MR, unscaled raw values).

    CT in HU has air at about -1000 HU outside and inside the body (lungs, bowel gas), so its low percentile
    is far below -500 HU. An 8-bit image (``uint8`` voxels without ``scl_slope``/``scl_inter`` scaling, or
    values only in 0..255) and an MR image (no negative values, or a 0.5th percentile above -500) are refused
    with :class:`InvalidVolumeError`. A ``uint8`` file whose scaling gives HU (stored = (HU - inter) / slope)
    is CT like any other.
    """
    arr = volume.array
    if arr.size == 0:
        raise InvalidVolumeError(volume.source or "<memory>", "is empty (a dimension has size 0)")
    lo, hi = float(arr.min()), float(arr.max())
    value_range = f"values {lo:g}..{hi:g}"
    not_ct = "does not look like CT in Hounsfield units"
    where = volume.source or "<memory>"
    on_disk = volume.header.get_data_dtype()
    slope, inter = volume.header.get_slope_inter()
    unscaled = slope in (None, 1.0) and inter in (None, 0.0)
    if (on_disk == np.uint8 and unscaled) or (lo >= 0 and hi <= 255):
        raise InvalidVolumeError(where, f"{not_ct}: it is an 8-bit image ({on_disk} voxels, {value_range})")
    if lo >= 0:
        raise InvalidVolumeError(
            where,
            f"{not_ct}: no negative values ({value_range}); CT has air at about -1000 HU. An MR image, or "
            f"raw CT values without the rescale intercept (often -1024)?",
        )
    sample = arr.reshape(-1)[:: max(1, arr.size // 2_000_000)]
    p_low = float(np.percentile(sample, 0.5))
    if p_low > -500:
        raise InvalidVolumeError(
            where,
            f"{not_ct}: no air ({value_range}, 0.5th percentile {p_low:g}); CT has air at about -1000 HU. An MR image?",
        )


def check_pair(image: Volume, label: Volume) -> None:
    """Check a label map fits its image: same grid (shape, spacing, world position within 1e-3 mm).

    Files stored in different voxel orders are accepted when their canonical grids agree.
    Raises :class:`LabelMismatchError` naming the label file and both shapes.
    """
    where = label.source or "<memory>"
    shape_l, shape_i = _fmt_shape(label.original_shape), _fmt_shape(image.original_shape)
    if label.array.shape != image.array.shape:
        raise LabelMismatchError(where, f"is {shape_l} but image {image.name} is {shape_i}")
    if not np.allclose(label.spacing, image.spacing, rtol=0, atol=GEOMETRY_TOLERANCE_MM):
        raise LabelMismatchError(
            where,
            f"spacing {_fmt_spacing(label.spacing)} mm differs from image {image.name} "
            f"({_fmt_spacing(image.spacing)} mm; z, y, x)",
        )
    delta = np.abs(label.canonical_affine - image.canonical_affine).max()
    if delta > GEOMETRY_TOLERANCE_MM:
        raise LabelMismatchError(
            where,
            f"affine differs from image {image.name} by up to {delta:.4g} mm (same shape {shape_l}):\n"
            f"label:\n{np.round(label.affine, 4)}\nimage:\n{np.round(image.affine, 4)}",
        )


def check_label_ids(label: Volume, allowed: range | set[int] | frozenset[int] = range(14)) -> None:
    """Raise :class:`LabelMismatchError` listing the ids in ``label`` that are not in ``allowed``."""
    check_label_array(label.array, label.source or "<memory>", allowed)


def check_label_array(
    array: np.ndarray, where: str | os.PathLike[str], allowed: range | set[int] | frozenset[int] = range(14)
) -> None:
    """:func:`check_label_ids` for a bare array read from ``where`` (``evaluate`` reads label maps unreoriented)."""
    present = np.unique(array)
    unknown = sorted(int(v) for v in present if int(v) not in allowed)
    if unknown:
        lo_hi = f"{min(allowed)}..{max(allowed)}" if isinstance(allowed, range) else sorted(allowed)
        raise LabelMismatchError(
            where,
            f"holds unknown label ids {unknown} (allowed: {lo_hi}); wrong label convention? "
            f"see smp_diffusion_encoder.data.remap",
        )


def write_label_map(
    labels: np.ndarray, reference: Volume, path: str | os.PathLike[str], info: LabelInfo | None = None
) -> Path:
    """Write canonical ``(Z, Y, X)`` integer labels with exactly ``reference``'s file geometry.

    The format follows ``path``'s ending (:func:`~smp_diffusion_encoder.data.io_registry.writer_for`): NIfTI
    (``.nii.gz``/``.nii``; shape, voxel order, affine and qform/sform codes equal the reference file's), NRRD /
    MetaImage (``.nrrd``/``.mha``; voxel order, size, spacing, origin and direction equal the reference's), or a
    DICOM SEG (``_seg.dcm``, for a reference read from a DICOM series). Ids are stored as ``uint8``
    (``uint16``/``int32`` above 255/65535). ``info``: what the ids are (default: the FLARE 2022 organs). Written
    atomically; returns the path.
    """
    path = Path(path)
    written = writer_for(path).write_labels(labels, reference, path, info or LabelInfo.flare())
    if written is None:
        raise ConfigError(f"{path}: nothing was written (see the warning)")
    return written


def write_volume_like(
    array: np.ndarray,
    reference: Volume,
    path: str | os.PathLike[str],
    dtype: DTypeLike = np.float32,
) -> Path:
    """Write a canonical ``(Z, Y, X)`` (or ``(C, Z, Y, X)``, stored as a 4D NIfTI with C last, or an NRRD/MHA
    vector image) float map (probabilities, uncertainty) with exactly ``reference``'s file geometry, in the
    format of ``path``'s ending (see :func:`write_label_map`). Written atomically."""
    path = Path(path)
    return writer_for(path, maps=True).write_map(array, reference, path, dtype)


#: Probability maps are stored as uint8 ``round(p * PROBABILITY_SCALE)`` (:func:`write_probabilities_like`).
PROBABILITY_SCALE = 255


def write_probabilities_like(probabilities: np.ndarray, reference: Volume, path: str | os.PathLike[str]) -> Path:
    """Write canonical ``(K, Z, Y, X)`` class probabilities in [0, 1] (any float dtype) with exactly
    ``reference``'s file geometry, as uint8 ``round(p * 255)`` (off by at most 1/510 = 0.002).

    NIfTI: 4D with the classes last and ``scl_slope = 1/255``, so NIfTI readers (nibabel, 3D Slicer, ITK) return
    probabilities in [0, 1]; NRRD / MetaImage: a uint8 vector image of 0..255 (divide by 255; these formats have
    no scale field). Memory: the uint8 map (1 byte per voxel and class) plus one class in float32; a NIfTI file
    is written from a view in the file's voxel order, without another copy. Written atomically.
    """
    path = Path(path)
    probabilities = np.asarray(probabilities)
    io = writer_for(path, maps=True)  # ConfigError naming the endings written
    if probabilities.ndim != 4 or probabilities.shape[1:] != reference.array.shape:
        raise ConfigError(
            f"{path}: probabilities are {probabilities.shape} but reference {reference.name} is "
            f"(K, Z, Y, X) with (Z, Y, X) = {reference.array.shape}"
        )
    stored = np.empty(probabilities.shape, np.uint8)
    work = np.empty(probabilities.shape[1:], np.float32)
    for k in range(len(stored)):  # one class at a time: no float copy of the whole map
        np.multiply(probabilities[k], PROBABILITY_SCALE, out=work)
        np.rint(np.clip(work, 0, PROBABILITY_SCALE, out=work), out=work)
        stored[k] = work
    del work
    if io.name != "nifti":  # the table's writer: NRRD or MetaImage vector image of 0..255
        return io.write_map(stored, reference, path, np.uint8)
    data = reference.to_original(stored, contiguous=False)  # (i, j, k, K) view
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    header["cal_min"], header["cal_max"] = 0, 0
    klass = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    img = klass(data, None, header=header)  # affine None: the header's qform/sform are kept verbatim
    img.update_header()
    hdr = img.header
    hdr.set_slope_inter(1.0 / PROBABILITY_SCALE, 0.0)
    offset = int(hdr.single_vox_offset + hdr.extensions.get_sizeondisk())
    hdr.set_data_offset(offset)
    with atomic_path(path) as tmp:
        opener = gzip.GzipFile(tmp, "wb", compresslevel=1, mtime=0) if path.name.endswith(".gz") else open(tmp, "wb")
        with opener as fh:
            hdr.write_to(fh)
            seek_tell(fh, offset, write0=True)
            array_to_file(data, fh, np.uint8, offset=offset, order="F")  # slab by slab from the view
    return path


def _to_canonical(data: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """File-order ``(i, j, k[, c])`` -> canonical ``(Z, Y, X)`` (``(C, Z, Y, X)`` for 4D)."""
    xyz = ornt_lib.apply_orientation(data, ornt)
    return np.ascontiguousarray(np.moveaxis(xyz, (0, 1, 2), (-1, -2, -3)))


def _as_label_ids(data: np.ndarray, where: Path | str) -> np.ndarray:
    if not np.issubdtype(data.dtype, np.integer):
        _check_finite(data, where)
        rounded = np.rint(data)
        bad = rounded != data
        if bad.any():
            example = data[bad].flat[0]
            shown = np.format_float_positional(example, unique=True, trim="-")  # shortest exact repr of its dtype
            raise InvalidVolumeError(
                where,
                f"is not a label map: {int(bad.sum())} {data.dtype} voxels are not integers (e.g. {shown}, nearest "
                f"integer {int(np.rint(example))}); label ids must be whole numbers (round a map saved as float "
                f"with rounding errors before using it)",
            )
        data = rounded
    if data.size == 0:
        return data.astype(np.uint8)
    lo, hi = int(data.min()), int(data.max())
    if lo < 0:
        raise InvalidVolumeError(where, f"is not a label map: negative label ids (min {lo})")
    dtype = np.uint8 if hi < 256 else np.uint16 if hi < 65536 else np.int64
    return data.astype(dtype, copy=False)


def _check_finite(array: np.ndarray, where: Path | str) -> None:
    if not np.issubdtype(array.dtype, np.floating):
        return
    finite = np.isfinite(array)
    if not finite.all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise InvalidVolumeError(
            where, f"has {n_nan} NaN and {n_inf} Inf voxels (of {array.size}); expected finite values"
        )


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def _fmt_spacing(spacing: tuple[float, ...]) -> str:
    return "x".join(f"{s:.4g}" for s in spacing)


__all__ = [
    "CANONICAL_AXCODES",
    "GEOMETRY_TOLERANCE_MM",
    "VOLUME_SUFFIXES",
    "Volume",
    "VolumeKind",
    "check_ct_hu",
    "check_label_ids",
    "check_pair",
    "is_volume_file",
    "read_volume",
    "strip_volume_suffix",
    "volume_from_nifti",
    "write_label_map",
    "write_volume_like",
]
