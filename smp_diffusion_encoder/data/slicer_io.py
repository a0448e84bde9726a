"""3D Slicer segmentations (``.seg.nrrd``) in the table of formats (:mod:`~smp_diffusion_encoder.data.io_registry`):
:class:`SlicerSegIO` reads one as a label map, segment **names** mapped to label ids through a table, and writes
``predict --output-format seg-nrrd``'s label maps (:func:`write_slicer_segmentation`).

A ``.seg.nrrd`` file holds named segments (``Segment0_Name:=Liver``), each a binary mask stored as a value of a
layer of the voxel array (overlapping segments go to separate layers). It is read with ``slicerio`` (the 3D Slicer
developers' reader, on top of ``pynrrd``), imported when a file is read; the table is

* by default, the FLARE 2022 organ names (:data:`~smp_diffusion_encoder.data.remap.FLARE_LABELS` and
  :data:`~smp_diffusion_encoder.data.remap.FLARE_ORGANS`: ``"liver"``, ``"right kidney"``, ``"RK"``,
  ``"inferior vena cava"``, ``"IVC"``...), compared case-insensitively with ``_`` and ``-`` read as spaces,
  which are also 3D Slicer's own anatomy names (``"Right kidney"``);
* or a table the user gives (:func:`read_label_table`): a JSON object ``{"segment name": id}`` with FLARE ids
  1..13, or 0 for a segment to leave out (``{"Leber": 1, "Niere rechts": 2, "Tumor": 0}``).

A segment whose name is not in the table and two segments of different ids that overlap raise
:class:`~smp_diffusion_encoder.errors.LabelMismatchError` naming the file. The file is read on its own grid
(3D Slicer may store only the box around the segments); placing it on its image's grid is
:func:`~smp_diffusion_encoder.data.slicer_seg.read_slicer_segmentation`'s.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from smp_diffusion_encoder._io import atomic_path, read_json_object
from smp_diffusion_encoder.data.imageio import LabelInfo, VolumeIO
from smp_diffusion_encoder.data.remap import FLARE_LABELS, FLARE_NUM_CLASSES, FLARE_ORGANS
from smp_diffusion_encoder.errors import ConfigError, CorruptFileError, InputFileError, LabelMismatchError

if TYPE_CHECKING:
    import nibabel as nib
    import numpy as np

    from smp_diffusion_encoder.data.volume import Volume

#: File ending of 3D Slicer segmentation files.
SEG_NRRD_SUFFIX = ".seg.nrrd"
#: 3D Slicer's world coordinates are LPS, NIfTI's RAS: x and y flip.
_LPS_TO_RAS = ((-1.0, 0.0, 0.0, 0.0), (0.0, -1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0), (0.0, 0.0, 0.0, 1.0))


def is_slicer_segmentation(path: str | os.PathLike[str]) -> bool:
    """True for a file name ending in ``.seg.nrrd`` (case-insensitive)."""
    return Path(path).name.lower().endswith(SEG_NRRD_SUFFIX)


def normalize_name(name: str) -> str:
    """How segment names are compared: lower case, ``_``/``-`` as spaces, runs of spaces as one."""
    return re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", str(name))).strip().lower()


def default_label_table() -> dict[str, int]:
    """FLARE 2022's organ names (full and short, normalized) -> FLARE ids."""
    table = {normalize_name(name): i for i, name in FLARE_LABELS.items()}
    table.update({normalize_name(name): i for i, name in enumerate(FLARE_ORGANS, start=1)})
    return table


def read_label_table(path: str | os.PathLike[str]) -> dict[str, int]:
    """A user's table ``{"segment name": id}`` (JSON object; ids 0..13, 0 leaves the segment out), normalized.

    Raises:
        InputFileError: not a JSON object, an id that is not an integer in 0..13, two spellings of one name
            with different ids.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "label table does not exist")
    raw = read_json_object(path)
    table: dict[str, int] = {}
    for name, value in raw.items():
        if type(value) is not int or not 0 <= value < FLARE_NUM_CLASSES:
            raise InputFileError(
                path,
                f"label table: segment {name!r} maps to {value!r}; ids are integers "
                f"0..{FLARE_NUM_CLASSES - 1} (FLARE 2022 ids, 0 leaves the segment out)",
            )
        key = normalize_name(name)
        if table.get(key, value) != value:
            raise InputFileError(path, f"label table: {name!r} is given twice with different ids")
        table[key] = value
    if not table:
        raise InputFileError(path, 'label table is empty (expected {"segment name": id, ...})')
    return table


class SlicerSegIO(VolumeIO):
    """3D Slicer segmentations: read as a label map; written by ``--output-format seg-nrrd`` as ``<case>.seg.nrrd``
    (:func:`write_slicer_segmentation`), probabilities and uncertainty beside it as ``.nrrd``."""

    name: ClassVar[str] = "seg-nrrd"
    endings: ClassVar[tuple[str, ...]] = (SEG_NRRD_SUFFIX,)
    images: ClassVar[bool] = False
    write_endings: ClassVar[tuple[str, ...]] = (SEG_NRRD_SUFFIX,)
    map_format: ClassVar[str | None] = "nrrd"

    def write_labels(self, labels: np.ndarray, reference: Volume, path: Path, info: LabelInfo) -> Path:
        return write_slicer_segmentation(labels, reference, path, info)

    def read(self, path: Path) -> nib.Nifti1Image:
        """The label ids (FLARE names, :func:`default_label_table`) on the file's own grid."""
        return self.read_labels(path)

    def read_labels(self, path: str | os.PathLike[str], table: Mapping[str, int] | None = None) -> nib.Nifti1Image:
        """The segments of ``path`` as label ids through ``table`` (normalized segment name -> id; default
        :func:`default_label_table`), in the file's voxel order with its affine (RAS).

        Raises:
            CorruptFileError: the file cannot be read as a 3D Slicer segmentation.
            LabelMismatchError: an unknown segment name, overlapping segments of different ids.
        """
        import nibabel as nib
        import numpy as np
        import slicerio

        path = Path(path)
        table = dict(default_label_table() if table is None else table)
        try:
            seg = slicerio.read_segmentation(str(path))
        except Exception as err:  # slicerio raises IOError, ValueError, nrrd errors
            raise CorruptFileError(
                path, f"cannot read as a 3D Slicer segmentation ({type(err).__name__}: {err})"
            ) from err
        voxels = seg.get("voxels")
        if voxels is None or voxels.ndim not in (3, 4):
            raise CorruptFileError(path, "holds no 3D voxel array (expected a 3D Slicer .seg.nrrd)")
        segments: list[dict[str, Any]] = list(seg.get("segments") or [])
        names = [str(s.get("name", s.get("id", "?"))) for s in segments]
        unknown = sorted({n for n in names if normalize_name(n) not in table})
        if unknown:
            accepted = sorted(table) if len(table) <= 30 else sorted(table)[:30] + ["..."]
            raise LabelMismatchError(
                path,
                f"segments {unknown} are not in the label table (accepted names: "
                f'{", ".join(accepted)}); give a table {{"segment name": id}} '
                f"(--label-table FILE) or rename the segments",
            )
        shape = voxels.shape[-3:]
        labels = np.zeros(shape, dtype=np.uint8)
        owner = np.full(shape, -1, dtype=np.int16)  # which segment claimed each voxel
        for index, (segment, name) in enumerate(zip(segments, names)):
            target = table[normalize_name(name)]
            mask = slicerio.segment_mask(seg, segment["id"]) if "id" in segment else None
            if mask is None or target == 0:
                continue
            clash = mask & (owner >= 0) & (labels != target)
            if clash.any():
                other = names[int(owner[clash].flat[0])]
                raise LabelMismatchError(
                    path,
                    f"segments {other!r} and {name!r} overlap in {int(clash.sum())} "
                    f"voxels but map to different ids ({labels[clash].flat[0]} and "
                    f"{target}); a voxel has one label: fix the overlap in 3D Slicer",
                )
            labels[mask] = target
            owner[mask] = index
        affine = np.asarray(_LPS_TO_RAS) @ np.asarray(seg["ijkToLPS"], dtype=np.float64)
        nifti = nib.Nifti1Image(labels, affine)
        nifti.set_qform(affine, code=1)
        nifti.set_sform(affine, code=1)
        return nifti


def segment_name(name: str) -> str:
    """A label name as 3D Slicer's anatomy names write it: ``"right kidney"`` -> ``"Right kidney"``."""
    return name[:1].upper() + name[1:]


def hex_to_rgb(color: str) -> tuple[float, float, float]:
    """``"#rrggbb"`` -> ``(r, g, b)`` in 0..1 (rounded to 6 digits, as 3D Slicer writes them)."""
    value = color.lstrip("#")
    return tuple(round(int(value[i : i + 2], 16) / 255.0, 6) for i in (0, 2, 4))  # type: ignore[return-value]


def write_slicer_segmentation(
    labels: np.ndarray, reference: Volume, path: str | os.PathLike[str], info: LabelInfo | None = None
) -> Path:
    """Write canonical ``(Z, Y, X)`` ids as a 3D Slicer segmentation (``.seg.nrrd``, one labelmap layer) with
    exactly ``reference``'s file grid (voxel order, size, spacing, origin, directions; LPS as Slicer stores it).

    One segment per id present (ascending): its name from ``info`` (``"Liver"``; ``"Label <id>"`` for an id
    without a name), its colour from ``info`` (0..1), its label value the id itself, so the voxels are the ids.
    Written with ``slicerio.write_segmentation`` (gzip), atomically; returns the path.

    Raises:
        ConfigError: labels that are not non-negative integers below 65536, or not on ``reference``'s grid.
    """
    import numpy as np
    import slicerio

    path = Path(path)
    info = info or LabelInfo.flare()
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_:
        raise ConfigError(f"{path}: a segmentation needs integer labels, got dtype {labels.dtype}")
    if labels.shape != reference.array.shape:
        raise ConfigError(
            f"{path}: labels are {labels.shape} but reference {reference.name} is {reference.array.shape}"
        )
    ids = [int(v) for v in np.unique(labels) if v != 0]
    if ids and (ids[0] < 0 or ids[-1] > 65535):
        raise ConfigError(f"{path}: label ids must be in 0..65535, got {ids[0]}..{ids[-1]}")
    dtype = np.uint8 if not ids or ids[-1] < 256 else np.uint16
    voxels = np.ascontiguousarray(reference.to_original(labels.astype(dtype, copy=False)))  # file order (i, j, k)
    segments = []
    for label in ids:
        segment: dict[str, Any] = {
            "id": f"Segment_{label}",
            "name": segment_name(info.names.get(label, f"Label {label}")),
            "labelValue": label,
            "layer": 0,
            "extent": [int(v) for axis in np.nonzero(voxels == label) for v in (axis.min(), axis.max())],
        }
        if label in info.colors:
            segment["color"] = list(hex_to_rgb(info.colors[label]))
        segment["tags"] = {"Segmentation.Status": "completed", "Source": info.algorithm}
        segments.append(segment)
    segmentation = {
        "voxels": voxels,
        "ijkToLPS": np.asarray(_LPS_TO_RAS) @ np.asarray(reference.affine, dtype=np.float64),
        "segments": segments,
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
    }
    with atomic_path(path, keep_suffix=True) as tmp:
        slicerio.write_segmentation(str(tmp), segmentation)
    return path


__all__ = [
    "SEG_NRRD_SUFFIX",
    "SlicerSegIO",
    "default_label_table",
    "is_slicer_segmentation",
    "normalize_name",
    "read_label_table",
    "write_slicer_segmentation",
]
