"""3D Slicer segmentations (``.seg.nrrd``) as label maps: segments named, mapped to label ids through a table.

A ``.seg.nrrd`` file holds named segments (``Segment0_Name:=Liver``), each a binary mask stored as a value of a
layer of the voxel array (overlapping segments go to separate layers). It is read with ``slicerio`` (the 3D Slicer
developers' reader, on top of ``pynrrd``) by the format's class in the table of formats
(:class:`~smp_diffusion_encoder.data.slicer_io.SlicerSegIO`), which maps segment **names** to label ids:

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
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from smp_diffusion_encoder.data.slicer_io import (
    SEG_NRRD_SUFFIX,
    SlicerSegIO,
    default_label_table,
    is_slicer_segmentation,
    normalize_name,
    read_label_table,
)
from smp_diffusion_encoder.data.volume import GEOMETRY_TOLERANCE_MM, Volume, check_pair, volume_from_nifti
from smp_diffusion_encoder.errors import LabelMismatchError


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
    path = Path(path)
    own = volume_from_nifti(SlicerSegIO().read_labels(path, table), path, kind="label")
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


__all__ = [
    "SEG_NRRD_SUFFIX",
    "default_label_table",
    "is_slicer_segmentation",
    "normalize_name",
    "on_image_grid",
    "read_label_table",
    "read_slicer_segmentation",
]
