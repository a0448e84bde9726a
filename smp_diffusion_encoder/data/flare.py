"""FLARE 2022 dataset layout, and discovery of any folder of CT volumes.

FLARE 2022 (MICCAI 2022 challenge, REFERENCE.md §2) ships 50 labeled training scans, 2000 unlabeled ones
and 50 tuning scans::

    <root>/Training/FLARE22_LabeledCase50/images/FLARE22_Tr_0001_0000.nii.gz
    <root>/Training/FLARE22_LabeledCase50/labels/FLARE22_Tr_0001.nii.gz
    <root>/Training/FLARE22_UnlabeledCase1-1000/Case_00001_0000.nii.gz
    <root>/Training/FLARE22_UnlabeledCase1001-2000/...
    <root>/Tuning/images/FLARETs_0001_0000.nii.gz
    <root>/Tuning/labels/FLARETs_0001.nii.gz

Folder names appear with and without the ``22`` (``FLARELabeledCase50``); every ``*UnlabeledCase*`` folder
is unlabeled data (searched recursively). The case id is the image file name minus ``_0000.nii.gz``; label
files carry no ``_0000``. As in nnU-Net, images and labels may be in any format the table of formats reads
(:mod:`~.io_registry`: also ``_0000.nrrd``, ``.mha``...). Only file names are read here:
:func:`~.volume.read_volume` opens the files.

Example:
    >>> ds = FlareDataset.discover("/data/FLARE22")                 # doctest: +SKIP
    >>> len(ds.labeled), len(ds.unlabeled), len(ds.tuning)         # doctest: +SKIP
    (50, 2000, 50)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from smp_diffusion_encoder.data.dicom import is_dicom_file
from smp_diffusion_encoder.data.io_registry import IMAGE_SUFFIXES, VOLUME_SUFFIXES, is_volume_file, strip_volume_suffix
from smp_diffusion_encoder.errors import DatasetLayoutError

_LABELED_DIR = re.compile(r"^FLARE(22)?_?LabeledCase\d*$", re.IGNORECASE)
_IMAGE_SUFFIX = "_0000"
_EXPECTED = (
    "Training/FLARE22_LabeledCase50/{images,labels}, Training/FLARE22_UnlabeledCase1-1000 (any "
    "*UnlabeledCase* folder) or Tuning/{images,labels}"
)


@dataclass(frozen=True)
class Case:
    """One scan: ``image`` is a NIfTI file (or a DICOM series folder), ``label`` its label map (``None`` for
    unlabeled scans)."""

    case_id: str
    image: Path
    label: Path | None = None


@dataclass(frozen=True)
class FlareDataset:
    """The cases of a FLARE 2022 root, each list sorted by case id."""

    root: Path
    labeled: list[Case] = field(default_factory=list)
    unlabeled: list[Case] = field(default_factory=list)
    tuning: list[Case] = field(default_factory=list)

    @property
    def cases(self) -> list[Case]:
        """All cases: labeled, then unlabeled, then tuning."""
        return [*self.labeled, *self.unlabeled, *self.tuning]

    @classmethod
    def discover(cls, root: str | os.PathLike[str]) -> FlareDataset:
        """Find the cases under ``root`` (see module docstring for the layout).

        Raises:
            DatasetLayoutError: ``root`` missing or holding none of the expected folders; an image without
                a label or a label without an image; an empty images folder; a case id seen twice.
        """
        root = Path(root)
        if not root.is_dir():
            raise DatasetLayoutError(root, "does not exist or is not a folder (expected a FLARE 2022 root)")
        training = root / "Training"
        labeled_dirs = sorted(p for p in _subdirs(training) if _LABELED_DIR.match(p.name))
        unlabeled_dirs = sorted(p for p in _subdirs(training) if "unlabeledcase" in p.name.lower())
        tuning_dir = root / "Tuning"
        if not labeled_dirs and not unlabeled_dirs and not tuning_dir.is_dir():
            raise DatasetLayoutError(root, f"is not a FLARE 2022 root: expected {_EXPECTED}")
        labeled = [case for d in labeled_dirs for case in _paired_cases(d)]
        unlabeled = []
        for folder in unlabeled_dirs:
            images = sorted(p for p in folder.rglob("*") if _is_volume(p))
            if not images:
                raise DatasetLayoutError(folder, "holds no NIfTI images (*_0000.nii.gz)")
            unlabeled.extend(Case(_case_id(p), p) for p in images)
        tuning = _paired_cases(tuning_dir, labels_optional=True) if tuning_dir.is_dir() else []
        dataset = cls(
            root=root,
            labeled=sorted(labeled, key=lambda c: c.case_id),
            unlabeled=sorted(unlabeled, key=lambda c: c.case_id),
            tuning=sorted(tuning, key=lambda c: c.case_id),
        )
        _check_unique(root, dataset.cases)
        return dataset


#: Label-map file names of a case folder (:func:`find_labeled_cases`): these names in every format read (a 3D
#: Slicer segmentation too: ``label.seg.nrrd``).
CASE_LABEL_NAMES = tuple(f"{stem}{end}" for stem in ("label", "labels", "segmentation") for end in VOLUME_SUFFIXES)
#: Image file names of a case folder without a DICOM series, in order of preference.
CASE_IMAGE_NAMES = tuple(f"image{end}" for end in IMAGE_SUFFIXES)


def find_labeled_cases(path: str | os.PathLike[str]) -> list[Case]:
    """Labeled scans to score: a FLARE 2022 root's labeled (and labeled tuning) cases, one case folder, or the
    case folders anywhere below ``path`` (e.g. the shipped demo's ``train/`` and ``test/`` folders of case folders).

    A case folder holds a label map (one of :data:`CASE_LABEL_NAMES`) and its image: a DICOM series
    subfolder (preferred: what scanners and PACS give) or ``image.nii.gz``; the case id is the folder's name.

    Example:
        >>> from importlib.resources import files
        >>> [case] = find_labeled_cases(files("smp_diffusion_encoder") / "demo_data" / "test")
        >>> case.case_id, case.image.name, case.label.name
        ('REALCT_Ts_0001', 'dicom', 'label.nii.gz')

    Raises:
        DatasetLayoutError: nothing labeled is found, or a case folder has a label but no image.
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetLayoutError(path, "does not exist or is not a folder (expected a FLARE root or case folders)")
    if (path / "Training").is_dir() or (path / "Tuning").is_dir():
        ds = FlareDataset.discover(path)
        cases = [c for c in (*ds.labeled, *ds.tuning) if c.label is not None]
    else:
        cases = [_case_folder(p) for p in case_folders(path)]
    if not cases:
        raise DatasetLayoutError(
            path,
            f"holds no labeled case (a FLARE root, or folders with a label map "
            f"label.nii.gz (or labels/segmentation, {'/'.join(VOLUME_SUFFIXES)}) and a "
            f"DICOM series or image.nii.gz)",
        )
    _check_unique(path, cases)
    return cases


def case_folders(folder: str | os.PathLike[str]) -> list[Path]:
    """``folder`` itself if it is a case folder (it holds one of :data:`CASE_LABEL_NAMES`), else the case folders
    anywhere below it (not below another case folder), sorted by path; hidden folders are skipped."""
    found: list[Path] = []
    for dirpath, dirnames, _ in os.walk(folder):
        here = Path(dirpath)
        if _case_label(here) is not None:
            found.append(here)
            dirnames[:] = []
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found)


def find_cases(folder: str | os.PathLike[str]) -> list[Case]:
    """Every scan under ``folder``: its case folders (:func:`case_folders`) as labeled cases named after the folder,
    then every other volume file and DICOM series folder (:func:`discover_volumes`) as an unlabeled case named by
    its file or folder name.

    Raises:
        DatasetLayoutError: nothing found, or a case folder without its image (see :func:`find_labeled_cases`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetLayoutError(folder, "does not exist or is not a folder")
    dirs = case_folders(folder)
    cases = [_case_folder(d) for d in dirs]
    loose = [p for p in discover_volumes(folder) if not any(d == p or d in p.parents for d in dirs)]
    return cases + [Case(p.name, p) for p in loose]


def _case_label(folder: Path) -> Path | None:
    return next((folder / n for n in CASE_LABEL_NAMES if (folder / n).is_file()), None)


def _case_folder(folder: Path) -> Case:
    label = _case_label(folder)
    assert label is not None
    series = sorted(p for p in folder.iterdir() if p.is_dir() and any(is_dicom_file(f) for f in p.iterdir()))
    files = [folder / n for n in CASE_IMAGE_NAMES if (folder / n).is_file()]
    image = series[0] if len(series) == 1 else files[0] if files else folder / CASE_IMAGE_NAMES[0]
    if len(series) > 1:
        raise DatasetLayoutError(
            folder,
            f"holds {len(series)} DICOM series folders ({[p.name for p in series]}); a case folder has one image",
        )
    if not image.exists():
        raise DatasetLayoutError(
            folder,
            f"has {label.name} but no image (a DICOM series folder or image with one "
            f"of the endings {'/'.join(VOLUME_SUFFIXES)})",
        )
    return Case(folder.name, image, label)


def discover_volumes(folder: str | os.PathLike[str]) -> list[Path]:
    """NIfTI files and DICOM series folders under ``folder`` (recursive), sorted by relative path.

    A folder counts as a DICOM series when it directly holds DICOM files; ``folder`` itself may be one.
    Raises :class:`DatasetLayoutError` when nothing is found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetLayoutError(folder, "does not exist or is not a folder")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        files = [here / f for f in sorted(filenames) if not f.startswith(".")]
        found.extend(f for f in files if _is_volume(f))
        if any(is_dicom_file(f) for f in files if not _is_volume(f)):
            found.append(here)
    if not found:
        raise DatasetLayoutError(
            folder, f"holds no volume files ({', '.join(VOLUME_SUFFIXES)}) or DICOM series folders"
        )
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _paired_cases(folder: Path, *, labels_optional: bool = False) -> list[Case]:
    images_dir, labels_dir = folder / "images", folder / "labels"
    if not images_dir.is_dir():
        raise DatasetLayoutError(folder, "has no images/ folder (expected images/ and labels/)")
    images = {_case_id(p): p for p in sorted(images_dir.iterdir()) if _is_volume(p)}
    if not images:
        raise DatasetLayoutError(images_dir, "holds no NIfTI images (*_0000.nii.gz)")
    if not labels_dir.is_dir():
        if labels_optional:
            return [Case(cid, path) for cid, path in images.items()]
        raise DatasetLayoutError(folder, "has images/ but no labels/ folder")
    labels = {_label_id(p): p for p in sorted(labels_dir.iterdir()) if _is_volume(p)}
    _check_paired(labels_dir, images, labels, "images have no label", "labels/{}.nii.gz")
    _check_paired(images_dir, labels, images, "labels have no image", "images/{}_0000.nii.gz")
    return [Case(cid, images[cid], labels[cid]) for cid in sorted(images)]


def _check_paired(where: Path, these: dict[str, Path], others: dict[str, Path], problem: str, expected: str) -> None:
    """Refuse case ids in ``these`` that ``others`` lacks, naming up to 5 files and the name ``expected``."""
    missing = sorted(set(these) - set(others))
    if missing:
        names = ", ".join(these[c].name for c in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DatasetLayoutError(
            where, f"{len(missing)} {problem} ({names}); expected e.g. {expected.format(missing[0])}"
        )


def _check_unique(root: Path, cases: list[Case]) -> None:
    seen: dict[str, Path] = {}
    for case in cases:
        if case.case_id in seen:
            raise DatasetLayoutError(
                root, f"case id {case.case_id} appears twice: {seen[case.case_id]} and {case.image}"
            )
        seen[case.case_id] = case.image


def _subdirs(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []


def _is_volume(path: Path) -> bool:
    """A volume file (NIfTI, NRRD, MetaImage), not hidden."""
    return is_volume_file(path) and not path.name.startswith(".") and path.is_file()


def _label_id(path: Path) -> str:
    return strip_volume_suffix(path.name)  # a 3D Slicer segmentation CASE.seg.nrrd labels CASE


def _case_id(path: Path) -> str:
    stem = strip_volume_suffix(path.name)
    return stem[: -len(_IMAGE_SUFFIX)] if stem.endswith(_IMAGE_SUFFIX) else stem
