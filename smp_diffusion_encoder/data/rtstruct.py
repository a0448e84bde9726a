"""Label maps as DICOM RT Structure Sets (``--output-format rtstruct``), for radiotherapy planning systems.

:func:`write_rtstruct` writes ``<case>_rtstruct.dcm`` with `rt-utils <https://github.com/qurit/rt-utils>`_: an
RTSTRUCT (SOP class 1.2.840.10008.5.1.4.1.1.481.3) that references the source CT series (its study, frame of
reference, ``SeriesInstanceUID`` and every slice's ``SOPInstanceUID``), one ROI per FLARE organ present (FLARE id
order), named like 3D Slicer's anatomy (``"Liver"``, ``"Right kidney"``), with the organ's colour, description
``"FLARE 2022 label <id>"``, generation algorithm AUTOMATIC, interpreted type ORGAN. Each ROI is a stack of
closed planar contours, one set per CT slice, traced through the centres of the organ's boundary pixels.

Placement: each slice's labels are the label-map voxels at that slice's pixel centres
(:func:`~smp_diffusion_encoder.data.dicom_seg.labels_on_frames`, as for DICOM SEG; exact for ordinary series,
mapped back onto the acquired slices for gantry-tilted ones). rt-utils traces the contours in pixel units; their
points are then placed with each slice's own position, orientation and pixel spacing (rt-utils 1.2.7 itself puts
every slice on the first slice's normal and scales columns by the row spacing, wrong for tilted series and
non-square pixels). Contours are polygons: read back as masks they lose part of the boundary pixels' area.

rt-utils is optional (``pip install 'smp_diffusion_encoder[rtstruct]'``, or where ``opencv-python-headless`` is
installed, as with this package, ``pip install --no-deps rt-utils==1.2.7``: it requires ``opencv-python`` but
works with either). Classic single-frame series only (rt-utils reads one file per slice).

Example:
    >>> vol = read_volume("patient01/CT")                                      # doctest: +SKIP
    >>> write_rtstruct(labels, vol, "out/patient01_rtstruct.dcm")              # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from smp_diffusion_encoder._io import atomic_path
from smp_diffusion_encoder.data.imageio import LabelInfo, VolumeIO
from smp_diffusion_encoder.errors import ConfigError, DicomSeriesError

if TYPE_CHECKING:
    import numpy as np

    from smp_diffusion_encoder.data.volume import Volume

#: What to install when rt-utils is missing.
INSTALL_HINT = (
    "pip install 'smp_diffusion_encoder[rtstruct]' (or, beside opencv-python-headless: "
    "pip install --no-deps rt-utils==1.2.7)"
)


def _rt_utils() -> Any:
    try:
        import rt_utils
    except ImportError as err:
        raise ConfigError(f"--output-format rtstruct needs rt-utils, which is not installed: {INSTALL_HINT}") from err
    return rt_utils


class RtStructIO(VolumeIO):
    """``<case>_rtstruct.dcm``, a DICOM RT Structure Set referencing the input series (classic DICOM series
    inputs only; :func:`write_rtstruct`); probabilities and uncertainty beside it as NIfTI. A label map without
    any organ gets an RTSTRUCT without ROIs."""

    name: ClassVar[str] = "rtstruct"
    write_endings: ClassVar[tuple[str, ...]] = ("_rtstruct.dcm",)
    map_format: ClassVar[str | None] = "nifti"

    def check_outputs(self, inputs: Sequence[Path], num_classes: int) -> None:
        from smp_diffusion_encoder.data.dicom import require_series_inputs

        _rt_utils()
        require_series_inputs(inputs, "rtstruct", "an RTSTRUCT", "nifti, nrrd, mha or seg-nrrd")

    def write_labels(self, labels: np.ndarray, reference: Volume, path: Path, info: LabelInfo) -> Path:
        return write_rtstruct(labels, reference, path, info)


def write_rtstruct(
    labels: np.ndarray, volume: Volume, path: str | os.PathLike[str], info: LabelInfo | None = None
) -> Path:
    """Write canonical ``(Z, Y, X)`` ids on ``volume``'s grid as an RTSTRUCT referencing ``volume``'s source series
    (see the module docstring); atomically. Returns the path.

    Raises:
        ConfigError: rt-utils is not installed; ``volume`` was not read from a DICOM series folder, or from an
            Enhanced multi-frame one; ``labels`` has the wrong shape.
        DicomSeriesError: rt-utils does not read the series' slices as :func:`~.dicom.series_geometry` does.
    """
    import numpy as np

    from smp_diffusion_encoder.data.dicom import series_geometry, series_source
    from smp_diffusion_encoder.data.dicom_seg import TYPE2_ATTRIBUTES, labels_on_frames
    from smp_diffusion_encoder.data.slicer_io import segment_name

    rt_utils = _rt_utils()
    from rt_utils import ds_helper, image_helper

    path = Path(path)
    info = info or LabelInfo.flare()
    labels = np.asarray(labels)
    source = series_source(volume, labels, "RTSTRUCT", "NIfTI, NRRD, MHA or seg-nrrd")
    frames, _ = series_geometry(source)
    if any(f.index is not None for f in frames):
        raise ConfigError(
            f"{source}: an Enhanced multi-frame series; RTSTRUCT output (rt-utils) needs one file per slice: "
            f"use --output-format dicom-seg for it"
        )
    series = image_helper.load_sorted_image_series(str(source))  # rt-utils' own order: along the slice normal
    by_uid = {f.sop_instance_uid: n for n, f in enumerate(frames)}
    order = [by_uid.get(str(ds.SOPInstanceUID), -1) for ds in series]
    if sorted(order) != list(range(len(frames))):
        raise DicomSeriesError(
            source, f"rt-utils reads {len(series)} slices of the {len(frames)} of the series (undecodable pixels?)"
        )
    for keyword in TYPE2_ATTRIBUTES:  # a de-identified series: empty, as the standard allows (rt-utils needs them)
        if keyword not in series[0]:
            setattr(series[0], keyword, "")
    with warnings.catch_warnings():  # rt-utils sets FileDataset.is_little_endian / is_implicit_VR (pydicom 3)
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds_helper.create_rtstruct_dataset(series)
    ds.Manufacturer = "smp_diffusion_encoder"
    ds.ManufacturerModelName = info.algorithm[:64]
    del ds.InstitutionName
    ds.SeriesDescription = "smp_diffusion_encoder organs"
    ds.StructureSetLabel = "organs"
    rtstruct = rt_utils.RTStruct(series, ds)

    on_slices = labels_on_frames(labels, volume, frames)[order]  # (slices, rows, cols) in rt-utils' order
    for label in [int(v) for v in np.unique(on_slices) if v != 0]:
        color = info.colors.get(label)
        rtstruct.add_roi(
            mask=np.ascontiguousarray(np.transpose(on_slices == label, (1, 2, 0))),  # (rows, cols, slices)
            color=[int(color.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4)] if color else None,
            name=segment_name(info.names.get(label, f"Label {label}")),
            description=f"FLARE 2022 label {label}",
            roi_generation_algorithm="AUTOMATIC",
        )
        ds.RTROIObservationsSequence[-1].RTROIInterpretedType = "ORGAN"
    _place_contours(ds, series, [frames[n] for n in order], image_helper)
    with atomic_path(path, keep_suffix=True) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ds.save_as(str(tmp), enforce_file_format=True)
    return path


def _place_contours(ds: Any, series: list[Any], frames: list[Any], image_helper: Any) -> None:
    """Re-place rt-utils' contour points with each slice's own geometry (see the module docstring)."""
    import numpy as np

    to_pixel = image_helper.get_patient_to_pixel_transformation_matrix(series).astype(np.float64)
    by_uid = {f.sop_instance_uid: f for f in frames}
    for roi in ds.ROIContourSequence:
        for contour in roi.get("ContourSequence", []):
            frame = by_uid[str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)]
            points = np.asarray(contour.ContourData, dtype=np.float64).reshape(-1, 3)
            pixel = np.rint(to_pixel[:3, :3] @ points.T + to_pixel[:3, 3:])  # (column, row, slice) as traced
            dr, dc = frame.pixel_spacing
            row_dir, col_dir = frame.orientation[:3], frame.orientation[3:]
            lps = frame.position[:, None] + np.outer(row_dir * dc, pixel[0]) + np.outer(col_dir * dr, pixel[1])
            contour.ContourData = [round(float(v), 4) for v in lps.T.ravel()]


__all__ = ["INSTALL_HINT", "RtStructIO", "write_rtstruct"]
