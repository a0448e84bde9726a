"""What ``smp-diffusion suggest`` ranks: the user's scans, and which of their slices are labeled already.

Scans (:func:`find_scans`): any input ``smp-diffusion predict`` reads (a NIfTI / NRRD / MetaImage file, a DICOM
series folder, a folder of them), and case folders (an image, i.e. ``image.nii.gz`` or one DICOM series
folder, optionally with a label map: what ``smp-diffusion finetune`` trains on), or a folder of case folders.
A scan's id is its case name (``FLARE22_Tr_0001_0000.nii.gz`` -> ``FLARE22_Tr_0001``; a case or DICOM folder's
name), the same id a run's ``split.json`` uses for a case folder.

Labeled slices (:func:`labeled_slices`), never suggested and kept at a distance:

* a case folder's own label map: the slices its sidecar lists (:mod:`~smp_diffusion_encoder.data.labeled_slices`),
  or every slice when it has no sidecar (a fully labeled scan has nothing left to label);
* ``--labeled`` files: a run's ``split.json`` (its train and validation slices), sidecars
  (``<scan>.slices.json``, or ``label.slices.json`` inside the case folder ``<scan>/``) and label maps (named
  like their scan or inside its case folder), read the same way.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from smp_diffusion_encoder._io import read_json_object
from smp_diffusion_encoder.data.dicom import is_dicom_folder
from smp_diffusion_encoder.data.flare import CASE_IMAGE_NAMES, CASE_LABEL_NAMES, FlareDataset, discover_volumes
from smp_diffusion_encoder.data.labeled_slices import SIDECAR_SUFFIX, read_label_map, read_sidecar
from smp_diffusion_encoder.data.slicer_seg import SEG_NRRD_SUFFIX
from smp_diffusion_encoder.data.splits import SPLIT_FORMAT, read_split_json
from smp_diffusion_encoder.data.volume import Volume, is_volume_file, read_volume
from smp_diffusion_encoder.errors import ConfigError, InputFileError
from smp_diffusion_encoder.inference.volume import case_name


@dataclass(frozen=True)
class Scan:
    """A scan to rank: ``scan_id``, its ``image`` (a volume file or DICOM series folder) and, for a case folder, its
    ``label`` map."""

    scan_id: str
    image: Path
    label: Path | None = None


def find_scans(paths: Sequence[str | os.PathLike[str]]) -> list[Scan]:
    """The scans in ``paths`` (see the module docstring); ids must be unique.

    Raises:
        InputFileError: a path that does not exist or holds no scan; two scans with one id.
    """
    scans: list[Scan] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise InputFileError(path, "does not exist")
        scans.extend(_scans_in(path))
    seen: dict[str, Path] = {}
    for scan in scans:
        if scan.scan_id in seen:
            raise InputFileError(
                scan.image, f"scan id {scan.scan_id} is also the id of {seen[scan.scan_id]}; give scans distinct names"
            )
        seen[scan.scan_id] = scan.image
    return scans


def _scans_in(path: Path) -> list[Scan]:
    if path.is_file():
        return [Scan(case_name(path), path)]
    if is_dicom_folder(path):
        return [Scan(path.name, path)]
    if (path / "Training").is_dir() or (path / "Tuning").is_dir():  # a FLARE root: its cases, labels with them
        return [Scan(c.case_id, c.image, c.label) for c in FlareDataset.discover(path).cases]
    case = _case_folder(path)
    if case is not None:
        return [case]
    cases = [c for c in (_case_folder(p) for p in sorted(path.iterdir()) if p.is_dir()) if c is not None]
    inside = {c.image for c in cases} | {c.image.parent for c in cases}
    loose = (
        [
            p
            for p in discover_volumes(path)
            if not any(q == p or q in p.parents for q in inside) and not _is_label_name(p)
        ]
        if _has_volumes(path)
        else []
    )
    found = cases + [Scan(p.name if p.is_dir() else case_name(p), p) for p in loose]
    if not found:
        raise InputFileError(path, "holds no scan (volume files, DICOM series folders or case folders)")
    return sorted(found, key=lambda s: s.scan_id)


def _case_folder(folder: Path) -> Scan | None:
    """A folder with ``image.nii.gz`` (or another :data:`CASE_IMAGE_NAMES`) or with a label map and one DICOM
    series subfolder."""
    label = next((folder / n for n in CASE_LABEL_NAMES if (folder / n).is_file()), None)
    image = next((folder / n for n in CASE_IMAGE_NAMES if (folder / n).is_file()), None)
    if image is None and label is not None:
        series = [p for p in sorted(folder.iterdir()) if is_dicom_folder(p)]
        image = series[0] if len(series) == 1 else None
    return Scan(folder.name, image, label) if image is not None else None


def _has_volumes(folder: Path) -> bool:
    try:
        discover_volumes(folder)
    except InputFileError:
        return False
    return True


def _is_label_name(path: Path) -> bool:
    return path.name in CASE_LABEL_NAMES or path.name.lower().endswith(SEG_NRRD_SUFFIX)


def labeled_slices(
    scans: Sequence[Scan],
    images: Mapping[str, Volume],
    given: Sequence[str | os.PathLike[str]] = (),
    *,
    table: Mapping[str, int] | None = None,
) -> dict[str, set[int]]:
    """``{scan_id: labeled z}``: each case folder's label map and every ``given`` file (see the module docstring).

    ``images``: the scans' canonical image volumes by id (for the grid of their label maps and sidecars). A
    split.json's cases that are not among the scans are ignored with a warning.

    Raises:
        InputFileError: a file that is neither a split, a sidecar nor a label map; a sidecar or label map of no
            scan given; and every error of reading them.
    """
    by_id = {s.scan_id: s for s in scans}
    out: dict[str, set[int]] = {s.scan_id: set() for s in scans}
    for scan in scans:
        if scan.label is not None:
            out[scan.scan_id] |= _from_label_map(scan.label, images[scan.scan_id], table)
    for raw in given:
        path = Path(raw)
        if not path.exists():
            raise InputFileError(path, "does not exist")
        if path.name.endswith(SIDECAR_SUFFIX):
            stem = path.name[: -len(SIDECAR_SUFFIX)]
            scan_id = _owner(path, stem, by_id, in_case_folder=stem == "label")
            out[scan_id] |= set(read_sidecar(path, images[scan_id]))
        elif path.suffix == ".json":
            out_of_scans = _from_split(path, out)
            if out_of_scans:
                warnings.warn(
                    f"{path}: cases {out_of_scans} are not among the scans ranked; their slices are ignored",
                    UserWarning,
                    stacklevel=2,
                )
        elif is_volume_file(path) or path.name.lower().endswith(SEG_NRRD_SUFFIX):
            stem = case_name(path)
            stem = stem[: -len(".seg")] if path.name.lower().endswith(SEG_NRRD_SUFFIX) else stem
            scan_id = _owner(path, stem, by_id, in_case_folder=_is_label_name(path))
            out[scan_id] |= _from_label_map(path, images[scan_id], table)
        else:
            raise InputFileError(path, "is neither a split (.json), a sidecar (.slices.json) nor a label map")
    return out


def _owner(path: Path, stem: str, by_id: Mapping[str, Scan], *, in_case_folder: bool) -> str:
    """The scan a sidecar or label map belongs to: named after it, or (a case folder's ``label.*`` file) inside
    its case folder."""
    if stem in by_id:
        return stem
    if in_case_folder and path.parent.name in by_id:
        return path.parent.name
    raise InputFileError(
        path,
        f"belongs to no scan given (scans: {sorted(by_id)}); name it <scan>{SIDECAR_SUFFIX} "
        f"/ <scan>.nii.gz or keep it in the scan's case folder",
    )


def _from_label_map(path: Path, image: Volume, table: Mapping[str, int] | None) -> set[int]:
    label = read_label_map(path, image, table=table)
    return set(range(image.array.shape[0])) if label.labeled is None else set(label.labeled)


def _from_split(path: Path, out: dict[str, set[int]]) -> list[str]:
    if read_json_object(path).get("format") != SPLIT_FORMAT:
        raise InputFileError(
            path, f'is not a split file ("format": "{SPLIT_FORMAT}") nor a sidecar (*{SIDECAR_SUFFIX})'
        )
    split = read_split_json(path)
    missing = set()
    for case_id, z in (*split.train, *split.evaluation):
        if case_id in out:
            out[case_id].add(int(z))
        else:
            missing.add(case_id)
    return sorted(missing)


def read_scan_images(scans: Sequence[Scan]) -> dict[str, Volume]:
    """Each scan's canonical HU volume (:func:`~smp_diffusion_encoder.data.volume.read_volume`)."""
    if not scans:
        raise ConfigError("no scan to rank")
    return {s.scan_id: read_volume(s.image) for s in scans}
