"""3D Slicer segmentations (``.seg.nrrd``) as label maps: segments named, mapped to label ids through a table.

A ``.seg.nrrd`` file holds named segments (``Segment0_Name:=Liver``), each a binary mask stored as a value of a
layer of the voxel array (overlapping segments go to separate layers). It is read with ``slicerio`` (the 3D Slicer
developers' reader, on top of ``pynrrd``); this module only maps segment **names** to label ids:

* by default, the FLARE 2022 organ names (:data:`~smp_diffusion_encoder.data.remap.FLARE_LABELS` and
  :data:`~smp_diffusion_encoder.data.remap.FLARE_ORGANS`: ``"liver"``, ``"right kidney"``, ``"RK"``,
  ``"inferior vena cava"``, ``"IVC"``...), compared case-insensitively with ``_`` and ``-`` read as spaces,
  which are also 3D Slicer's own anatomy names (``"Right kidney"``);
* or a table the user gives (:func:`read_label_table`): a JSON object ``{"segment name": id}`` with FLARE ids
  1..13, or 0 for a segment to leave out (``{"Leber": 1, "Niere rechts": 2, "Tumor": 0}``).

A segment whose name is not in the table, two segments of different ids that overlap, or a segmentation on
another grid than its image raise :class:`~smp_diffusion_encoder.errors.LabelMismatchError` naming the file.
3D Slicer may store only the box around the segments (its "Segmentation_ReferenceImageExtentOffset"); such a
block is placed onto the image's grid when its voxels are the image's voxels (same spacing and axes, offset
by whole voxels), and nothing is ever resampled.

Example:
    >>> labels = read_slicer_segmentation("case/label.seg.nrrd", image)            # doctest: +SKIP
    >>> labels.array.shape == image.array.shape                                    # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from smp_diffusion_encoder._io import read_json_object
from smp_diffusion_encoder.data.remap import FLARE_LABELS, FLARE_NUM_CLASSES, FLARE_ORGANS
from smp_diffusion_encoder.data.volume import GEOMETRY_TOLERANCE_MM, Volume, check_pair, volume_from_nifti
from smp_diffusion_encoder.errors import CorruptFileError, InputFileError, LabelMismatchError

#: File ending of 3D Slicer segmentation files.
SEG_NRRD_SUFFIX = ".seg.nrrd"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


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


def read_slicer_segmentation(
    path: str | os.PathLike[str], image: Volume, table: Mapping[str, int] | None = None
) -> Volume:
    """The ``.seg.nrrd`` file ``path`` as a canonical label :class:`Volume` on ``image``'s grid.

    ``table``: normalized segment name -> id (:func:`read_label_table`; default :func:`default_label_table`).
    The returned volume has ``image``'s geometry and ``source=path``.

    Raises:
        CorruptFileError: the file cannot be read as a 3D Slicer segmentation.
        LabelMismatchError: an unknown segment name, overlapping segments of different ids, another grid.
    """
    import slicerio

    path = Path(path)
    table = dict(default_label_table() if table is None else table)
    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as err:  # slicerio raises IOError, ValueError, nrrd errors
        raise CorruptFileError(path, f"cannot read as a 3D Slicer segmentation ({type(err).__name__}: {err})") from err
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
                f"segments {other!r} and {name!r} overlap in {int(clash.sum())} voxels "
                f"but map to different ids ({labels[clash].flat[0]} and {target}); "
                f"a voxel has one label: fix the overlap in 3D Slicer",
            )
        labels[mask] = target
        owner[mask] = index
    affine = _LPS_TO_RAS @ np.asarray(seg["ijkToLPS"], dtype=np.float64)
    nifti = nib.Nifti1Image(labels, affine)
    nifti.set_qform(affine, code=1)
    nifti.set_sform(affine, code=1)
    own = volume_from_nifti(nifti, path, kind="label")
    return on_image_grid(own, image)


def on_image_grid(label: Volume, image: Volume) -> Volume:
    """``label`` on ``image``'s grid: itself when the grids agree, a block of it pasted in at a whole-voxel
    offset when it holds only part of the image's voxels (same spacing and axes); otherwise
    :class:`LabelMismatchError` (:func:`~smp_diffusion_encoder.data.volume.check_pair`'s message)."""
    try:
        check_pair(image, label)
        return label
    except LabelMismatchError:
        pass
    own, ref = label.canonical_affine, image.canonical_affine
    same_axes = np.abs(own[:3, :3] - ref[:3, :3]).max() <= GEOMETRY_TOLERANCE_MM
    offset = np.linalg.solve(ref[:3, :3], own[:3, 3] - ref[:3, 3])  # canonical (x, y, z) voxels
    whole = np.abs(offset - np.rint(offset)).max() * np.abs(ref[:3, :3]).max() <= GEOMETRY_TOLERANCE_MM
    start = np.rint(offset).astype(int)[::-1]  # (z, y, x)
    stop = start + np.asarray(label.array.shape)
    inside = (start >= 0).all() and (stop <= np.asarray(image.array.shape)).all()
    if not (same_axes and whole and inside):
        check_pair(image, label)  # raises with the shapes, spacings or affines that differ
    array = np.zeros(image.array.shape, dtype=label.array.dtype)
    array[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]] = label.array
    return dataclasses.replace(image, array=array, source=label.source)
