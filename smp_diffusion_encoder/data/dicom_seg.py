"""Label maps as DICOM Segmentation objects (highdicom), for PACS, 3D Slicer and OHIF.

:func:`write_dicom_seg` writes a BINARY ``Segmentation`` (SOP class 1.2.840.10008.5.1.4.1.1.66.4) that
references the source CT series: same patient, study and frame of reference, and per frame the
``SOPInstanceUID`` (and frame number) of the CT slice it segments, with that slice's position and
orientation. One segment per FLARE organ present, numbered 1..n in FLARE id order; its label is the organ's
name (:data:`~smp_diffusion_encoder.data.remap.FLARE_LABELS`), its type a SNOMED CT code from pydicom's code
dictionary (category "Anatomical Structure"; the kidneys and adrenal glands carry a Right/Left modifier, the
usual DICOM way), its description ``"FLARE 2022 label <id>"``; algorithm type AUTOMATIC (artificial
intelligence). Frames without any voxel of a segment are omitted.

Placement: each CT frame's pixel ``(r, c)`` lies at ``IPP + c * dc * row_dir + r * dr * col_dir`` (LPS mm);
its label is the label-map voxel at that world point (nearest voxel). For an ordinary series the points are
exactly the voxel centres, so the segment frames are the label map's slices unchanged; for a gantry-tilted
series (whose label map lies on the resampled orthogonal grid, see
:mod:`~smp_diffusion_encoder.data.dicom_geometry`) they are mapped back onto the acquired slices.

Example:
    >>> vol = read_volume("patient01/CT")                                 # doctest: +SKIP
    >>> write_dicom_seg(labels, vol, "out/patient01_seg.dcm")             # doctest: +SKIP
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom

from smp_diffusion_encoder._io import atomic_path
from smp_diffusion_encoder.data.dicom import series_geometry, series_source
from smp_diffusion_encoder.data.dicom_frames import Frame
from smp_diffusion_encoder.data.remap import FLARE_LABELS
from smp_diffusion_encoder.errors import ConfigError, DicomSeriesError

if TYPE_CHECKING:
    from smp_diffusion_encoder.data.volume import Volume

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: FLARE id -> (pydicom ``codes.SCT`` keyword of the organ, laterality keyword or ``None``).
FLARE_SNOMED: dict[int, tuple[str, str | None]] = {
    1: ("Liver", None),
    2: ("Kidney", "Right"),
    3: ("Spleen", None),
    4: ("Pancreas", None),
    5: ("Aorta", None),
    6: ("InferiorVenaCava", None),
    7: ("AdrenalGland", "Right"),
    8: ("AdrenalGland", "Left"),
    9: ("Gallbladder", None),
    10: ("Esophagus", None),
    11: ("Stomach", None),
    12: ("Duodenum", None),
    13: ("Kidney", "Left"),
}


#: Type 2 attributes (present, may be empty) of the Patient and General Study modules that a SEG copies from
#: its source images (PS3.3 C.7.1.1, C.7.2.1); written empty where the source lacks them, as dcmqi does.
TYPE2_ATTRIBUTES: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def labels_on_frames(labels: np.ndarray, volume: Volume, frames: list[Frame]) -> np.ndarray:
    """``(frames, rows, columns)`` label ids at each frame's pixel centres (nearest voxel of ``labels``,
    canonical ``(Z, Y, X)`` on ``volume``'s grid; 0 outside it)."""
    world_to_voxel = np.linalg.inv(volume.canonical_affine)  # RAS mm -> canonical (x, y, z)
    out = np.zeros((len(frames), frames[0].rows, frames[0].columns), dtype=labels.dtype)
    rr, cc = np.meshgrid(np.arange(frames[0].rows), np.arange(frames[0].columns), indexing="ij")
    for n, frame in enumerate(frames):
        dr, dc = frame.pixel_spacing
        row_dir, col_dir = frame.orientation[:3], frame.orientation[3:]
        lps = frame.position[:, None] + np.outer(row_dir * dc, cc.ravel()) + np.outer(col_dir * dr, rr.ravel())
        ras = _LPS_TO_RAS[:3, :3] @ lps
        xyz = np.rint(world_to_voxel[:3, :3] @ ras + world_to_voxel[:3, 3:]).astype(np.int64)
        z_max, y_max, x_max = labels.shape
        inside = (xyz >= 0).all(axis=0) & (xyz[0] < x_max) & (xyz[1] < y_max) & (xyz[2] < z_max)
        values = np.zeros(xyz.shape[1], dtype=labels.dtype)
        values[inside] = labels[xyz[2, inside], xyz[1, inside], xyz[0, inside]]
        out[n] = values.reshape(frame.rows, frame.columns)
    return out


def write_dicom_seg(
    labels: np.ndarray,
    volume: Volume,
    path: str | os.PathLike[str],
    *,
    algorithm_name: str = "smp_diffusion_encoder",
    series_number: int = 901,
) -> Path:
    """Write canonical ``(Z, Y, X)`` FLARE ids (0 background, 1..13 organs) on ``volume``'s grid as a DICOM SEG
    referencing ``volume``'s source series (see the module docstring). Written atomically; returns the path.

    Raises:
        ConfigError: ``volume`` was not read from a DICOM series folder, ``labels`` has the wrong shape, holds
            ids outside 0..13, or no organ at all (a SEG needs at least one segment).
        DicomSeriesError: the source files lack a UID the SEG must reference (study, series, frame of
            reference, instance; SOP class and instance UIDs are taken from the file meta header when only
            the dataset's are empty), highdicom refuses them, or the series can no longer be read as it was.
            Type 2 patient/study attributes a de-identifier deleted are written empty (:data:`TYPE2_ATTRIBUTES`).
    """
    import highdicom as hd

    labels = np.asarray(labels)
    source = series_source(volume, labels, "DICOM SEG", "NIfTI, NRRD or MHA")
    present = [int(v) for v in np.unique(labels) if v != 0]
    unknown = [v for v in present if v not in FLARE_LABELS]
    if unknown:
        raise ConfigError(f"DICOM SEG output knows FLARE ids 1..13 only; labels hold {unknown}")
    if not present:
        raise ConfigError(f"{volume.name}: no organ in the label map; a DICOM SEG needs at least one segment")
    frames, grid = series_geometry(source)
    empty = [
        k
        for k in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID")
        if not str(frames[0].dataset.get(k, "") or "").strip()
    ]
    if empty:
        raise DicomSeriesError(
            source,
            f"{frames[0].name} has no {', '.join(empty)} (empty in the file), which a DICOM "
            f"SEG must reference; write NIfTI, NRRD or MHA instead, or fix the export",
        )
    on_frames = labels_on_frames(labels, volume, frames)
    segment_of = np.zeros(max(FLARE_LABELS) + 1, dtype=np.uint8)
    segment_of[present] = np.arange(1, len(present) + 1)
    pixel_array = segment_of[on_frames]  # (frames, rows, columns), segment numbers 1..n
    images, pixel_array = _source_images(frames, pixel_array)
    images = [_with_type2_attributes(ds, grid.spacing) for ds in images]
    algorithm = hd.AlgorithmIdentificationSequence(name=algorithm_name, version=_version(), family=_ai_family())
    descriptions = [_segment(n, flare_id, algorithm) for n, flare_id in enumerate(present, start=1)]
    try:
        seg = _segmentation(images, pixel_array, descriptions, algorithm_name, series_number)
    except (AttributeError, KeyError, TypeError, ValueError) as err:  # highdicom's refusals of the source
        raise DicomSeriesError(
            source,
            f"cannot be referenced by a DICOM SEG ({type(err).__name__}: {err}); write NIfTI, NRRD or MHA instead",
        ) from err
    path = Path(path)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path


def _segmentation(
    images: list, pixel_array: np.ndarray, descriptions: list, algorithm_name: str, series_number: int
) -> object:
    import highdicom as hd

    return hd.seg.Segmentation(
        source_images=images,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="smp_diffusion_encoder",
        manufacturer_model_name=algorithm_name[:64],
        software_versions=_version(),
        device_serial_number="none",
        content_label="ORGANS",
        content_description="FLARE 2022 organs, automatic segmentation",
        series_description="smp_diffusion_encoder organs",
    )


def _with_type2_attributes(ds: pydicom.Dataset, slice_spacing: float) -> pydicom.Dataset:
    """``ds``, or a copy in memory with the :data:`TYPE2_ATTRIBUTES` it lacks present and empty, which the standard
    allows for Type 2 (de-identifiers often delete them; highdicom reads them from the source), and, for a
    single-frame image without a ``SliceThickness`` value (Type 2 in CT, but Type 1C in the SEG's Pixel
    Measures), the series' slice spacing as dcmqi writes it. The copy's elements are ``ds``'s own, its element
    dict a new one: neither ``ds`` nor its file changes."""
    missing = [k for k in TYPE2_ATTRIBUTES if k not in ds]
    no_thickness = "PerFrameFunctionalGroupsSequence" not in ds and not str(ds.get("SliceThickness", "") or "").strip()
    if not missing and not no_thickness:
        return ds
    filled = pydicom.Dataset()
    filled.update(ds)
    if hasattr(ds, "file_meta"):
        filled.file_meta = ds.file_meta
    for keyword in missing:
        setattr(filled, keyword, None)  # an empty element
    if no_thickness:
        filled.SliceThickness = pydicom.valuerep.DS(slice_spacing, auto_format=True)
    return filled


def _source_images(frames: list[Frame], pixel_array: np.ndarray) -> tuple[list, np.ndarray]:
    """highdicom's ``source_images`` and the matching pixel array: one dataset per single-frame slice, or the
    one enhanced multi-frame dataset with the frames in its own frame order."""
    if all(f.index is None for f in frames):
        return [f.dataset for f in frames], pixel_array
    files = {f.path for f in frames}
    if len(files) > 1 or any(f.index is None for f in frames):
        raise ConfigError(
            f"DICOM SEG output for a series split over {len(files)} multi-frame files is not "
            f"supported; write NIfTI, NRRD or MHA instead"
        )
    order = np.argsort([f.index for f in frames])
    return [frames[0].dataset], pixel_array[order]


def _segment(number: int, flare_id: int, algorithm) -> object:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    organ, side = FLARE_SNOMED[flare_id]
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=FLARE_LABELS[flare_id],
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=getattr(codes.SCT, organ),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    if side is not None:
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept.from_code(getattr(codes.SCT, side))
        ]
    description.SegmentDescription = f"FLARE 2022 label {flare_id}"
    return description


def _ai_family():
    from pydicom.sr.codedict import codes

    return codes.cid7162.ArtificialIntelligence


def _version() -> str:
    try:
        return metadata.version("smp_diffusion_encoder")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"
