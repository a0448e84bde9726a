"""Partly labeled scans: a label map plus the list of its axial slices that were labeled (a sidecar file).

Users label a few axial slices inside a whole scan (3D Slicer, ITK-SNAP) and save one label map per scan in
which the other slices are empty. An empty slice may mean "labeled: no organ here" (valid training data) or
"not labeled" (not data at all), and nothing in the label map tells them apart, so the labeled slices are
**stated** in a sidecar JSON file beside the label map, never guessed from which slices hold an organ:

======================================  ==========================================
label map                               its sidecar
======================================  ==========================================
``CASE/label.nii.gz`` (case folder)     ``CASE/label.slices.json``
``CASE/label.seg.nrrd`` (3D Slicer)     ``CASE/label.slices.json``
``labels/FLARE22_Tr_0001.nii.gz``       ``labels/FLARE22_Tr_0001.slices.json``
======================================  ==========================================

(the label map's name without its ending (``.nii.gz``, ``.nrrd``, ``.seg.nrrd``, ``.mha``...) + ``.slices.json``)::

    {"format": "smp_diffusion_encoder.labeled_slices", "version": 1, "z": [12, 40, 71, 95]}

* ``z``: 0-based indices of the labeled axial slices in the library's canonical order (slice 0 is the one
  nearest the feet, whatever the file's voxel order; :mod:`~smp_diffusion_encoder.data.volume`), as
  ``smp-diffusion suggest`` prints them and writes them into ready-made sidecars;
* or ``positions_mm`` (instead or as well): the slices' positions along the patient's long axis, the S
  coordinate in millimetres (RAS) that 3D Slicer shows for an axial slice (``S: 123.5mm``); each must be
  within half a slice of a slice of the scan.

A label map without a sidecar is a fully labeled scan (every slice labeled; few-shot budgets then draw from
its slices with an organ, as :mod:`~smp_diffusion_encoder.data.splits` says). Checks, each an error naming the
file: a listed slice outside the scan; a label map on another grid than its image (also for the slices
listed); organs drawn on slices the sidecar does not list; a sidecar that is not one.

Example:
    >>> write_sidecar("case/label.slices.json", [12, 40, 71, 95])                  # doctest: +SKIP
    >>> read_label_map("case/label.nii.gz", image).labeled                         # doctest: +SKIP
    (12, 40, 71, 95)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smp_diffusion_encoder._io import atomic_write_json, read_json_object
from smp_diffusion_encoder.data.slicer_seg import SEG_NRRD_SUFFIX, is_slicer_segmentation, read_slicer_segmentation
from smp_diffusion_encoder.data.volume import Volume, check_pair, read_volume, strip_volume_suffix
from smp_diffusion_encoder.errors import InputFileError, LabelMismatchError

SIDECAR_FORMAT = "smp_diffusion_encoder.labeled_slices"
SIDECAR_VERSION = 1
SIDECAR_SUFFIX = ".slices.json"


@dataclass(frozen=True, eq=False)
class LabelMap:
    """A scan's label map on its image's grid and which of its slices are labeled.

    Attributes:
        volume: canonical ``(Z, Y, X)`` label ids, the image's geometry (``volume.source``: the label file).
        labeled: the stated labeled z (sorted), or ``None`` when every slice is labeled (no sidecar).
        sidecar: the sidecar file the list came from, if any.
    """

    volume: Volume
    labeled: tuple[int, ...] | None = None
    sidecar: Path | None = None

    @property
    def partial(self) -> bool:
        return self.labeled is not None


def sidecar_path(label_map: str | os.PathLike[str]) -> Path:
    """Where the sidecar of ``label_map`` lives: beside it, its name without the ending + ``.slices.json``."""
    label_map = Path(label_map)
    name = label_map.name
    stem = name[: -len(SEG_NRRD_SUFFIX)] if is_slicer_segmentation(label_map) else strip_volume_suffix(name)
    return label_map.with_name(stem + SIDECAR_SUFFIX)


def slice_positions_mm(volume: Volume) -> np.ndarray:
    """``(Z,)`` S coordinate (RAS, mm) of each canonical slice's centre: the position 3D Slicer shows."""
    z, y, x = volume.array.shape
    centres = np.stack([np.full(z, (x - 1) / 2), np.full(z, (y - 1) / 2), np.arange(z), np.ones(z)])
    return (volume.canonical_affine @ centres)[2]


def slice_in_file(volume: Volume, z: int) -> int:
    """Index (0-based) along the file's own slice axis of canonical slice ``z`` (the voxel ``k`` a NIfTI/NRRD
    viewer counts; for a DICOM series the position in the series sorted by slice position)."""
    (axis,) = [i for i in range(3) if int(volume.ornt[i, 0]) == 2]
    flipped = volume.ornt[axis, 1] < 0
    return int(volume.original_shape[axis] - 1 - z) if flipped else int(z)


def read_sidecar(path: str | os.PathLike[str], label: Volume) -> tuple[int, ...]:
    """The labeled z (sorted) a sidecar states for ``label``; see the module docstring for the format.

    Raises:
        InputFileError: not a sidecar, no slice listed, a slice listed twice, a ``z`` outside the scan, a
            ``positions_mm`` entry that is not within half a slice of one of its slices.
    """
    path = Path(path)
    d = read_json_object(path)
    if d.get("format") != SIDECAR_FORMAT:
        raise InputFileError(path, f'is not a labeled-slices sidecar (expected "format": "{SIDECAR_FORMAT}")')
    if d.get("version") != SIDECAR_VERSION:
        raise InputFileError(path, f"version {d.get('version')!r} is not {SIDECAR_VERSION}")
    unknown = sorted(set(d) - {"format", "version", "z", "positions_mm", "label_map", "note"})
    if unknown:
        raise InputFileError(path, f"unknown keys {unknown} (expected z and/or positions_mm)")
    n = label.array.shape[0]
    zs = d.get("z", [])
    if not isinstance(zs, list) or not all(type(z) is int for z in zs):
        raise InputFileError(path, '"z" must be a list of integer slice indices')
    outside = [z for z in zs if not 0 <= z < n]
    if outside:
        raise InputFileError(path, f"lists z={outside}, outside the {n} slices (0..{n - 1}) of {label.name}")
    listed = list(zs) + _match_positions(path, d.get("positions_mm", []), label)
    if not listed:
        raise InputFileError(path, 'lists no labeled slice ("z" or "positions_mm")')
    twice = sorted({z for z in listed if listed.count(z) > 1})
    if twice:
        raise InputFileError(path, f"lists slice(s) z={twice} twice")
    return tuple(sorted(listed))


def _match_positions(path: Path, positions: Any, label: Volume) -> list[int]:
    if not isinstance(positions, list) or not all(
        isinstance(p, (int, float)) and not isinstance(p, bool) for p in positions
    ):
        raise InputFileError(path, '"positions_mm" must be a list of numbers (mm)')
    if not positions:
        return []
    centres = slice_positions_mm(label)
    step = float(np.abs(np.diff(centres)).min()) if len(centres) > 1 else float(label.spacing[0])
    out = []
    for p in positions:
        z = int(np.argmin(np.abs(centres - p)))
        if abs(centres[z] - p) > step / 2 + 1e-3:
            raise InputFileError(
                path,
                f"positions_mm {p:g} is not on a slice of {label.name} (its slices run from "
                f"{centres.min():.2f} to {centres.max():.2f} mm, {step:.3g} mm apart)",
            )
        out.append(z)
    return out


def write_sidecar(path: str | os.PathLike[str], z: Iterable[int], *, note: str = "") -> Path:
    """Write a sidecar listing the canonical slices ``z`` (sorted, unique) atomically; returns the path."""
    zs = sorted({int(v) for v in z})
    d: dict[str, Any] = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "z": zs}
    if note:
        d["note"] = note
    atomic_write_json(path, d)
    return Path(path)


def check_listed(label: Volume, labeled: Sequence[int], sidecar: str | os.PathLike[str]) -> None:
    """Organs only on the listed slices: else :class:`LabelMismatchError` naming the label file and the slices."""
    has_organ = label.array.reshape(label.array.shape[0], -1).max(1) > 0
    extra = sorted(set(np.flatnonzero(has_organ).tolist()) - set(labeled))
    if extra:
        shown = extra if len(extra) <= 12 else extra[:12] + ["..."]
        raise LabelMismatchError(
            label.source or "<memory>",
            f"has organs on slices z={shown} that {Path(sidecar).name} does not list as "
            f"labeled; list them there too, or erase them",
        )


def read_label_map(path: str | os.PathLike[str], image: Volume, *, table: Mapping[str, int] | None = None) -> LabelMap:
    """Read a label map (any volume format, or a 3D Slicer ``.seg.nrrd`` through ``table``: see
    :mod:`~smp_diffusion_encoder.data.slicer_seg`) onto ``image``'s grid, with its sidecar if it has one.

    Raises:
        LabelMismatchError: another grid than ``image``; organs on slices the sidecar does not list; unknown or
            overlapping segments.
        InputFileError: a bad sidecar (:func:`read_sidecar`), an unreadable label map.
    """
    path = Path(path)
    if is_slicer_segmentation(path):
        volume = read_slicer_segmentation(path, image, table)
    else:
        volume = read_volume(path, kind="label")
        check_pair(image, volume)
    side = sidecar_path(path)
    if not side.is_file():
        _warn_if_gappy(volume, side)
        return LabelMap(volume)
    labeled = read_sidecar(side, volume)
    check_listed(volume, labeled, side)
    return LabelMap(volume, labeled, side)


def _warn_if_gappy(label: Volume, side: Path) -> None:
    """A map without a sidecar whose organ slices have empty slices between them looks partly labeled."""
    has_organ = np.flatnonzero(label.array.reshape(label.array.shape[0], -1).max(1) > 0)
    if len(has_organ) < 2:
        return
    gaps = int((np.diff(has_organ) > 1).sum())
    if gaps >= 2:
        warnings.warn(
            f"{label.source}: organs on {len(has_organ)} slices with {gaps} runs of empty slices between "
            f"them and no {side.name}: read as a fully labeled scan (its empty slices never train). If it "
            f"is partly labeled, list its labeled slices in {side.name} (slices labeled as holding no organ "
            f"are training data too)",
            UserWarning,
            stacklevel=3,
        )


def labeled_or_organ_slices(label: LabelMap) -> list[int]:
    """The slices a few-shot budget may draw from: the stated labeled slices of a partly labeled scan (empty
    ones too), else the slices with an organ (:func:`~smp_diffusion_encoder.data.splits.eligible_slices`)."""
    if label.labeled is not None:
        return list(label.labeled)
    return np.flatnonzero(label.volume.array.reshape(label.volume.array.shape[0], -1).max(1) > 0).tolist()


def labeled_by_case(maps: Mapping[str, LabelMap]) -> dict[str, list[int]]:
    """``{case_id: stated labeled z}`` of the partly labeled scans among ``maps``."""
    return {c: list(m.labeled) for c, m in maps.items() if m.labeled is not None}
