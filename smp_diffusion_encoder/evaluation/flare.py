"""FLARE 2022 evaluation: per-organ DSC and NSD with the official script's exact rules.

Rules, per case and per organ ``i`` (FLARE id ``i`` = position in ``FLARE_ORGANS`` + 1):

- absent in both ground truth and prediction -> DSC = NSD = 1;
- absent in the ground truth only -> DSC = NSD = 0 (absent in the prediction only gives 0 by the formulas);
- aorta, IVC and esophagus are scored only on the ground truth's z-range ``[zmin, zmax)`` of that organ
  (``zmax`` is the last labelled slice and is *excluded*, as in the official code); z is the third voxel
  axis of the NIfTI file;
- DSC < 0.2 -> NSD = 0 (:data:`NSD_MIN_DSC`);
- NSD tolerances in mm: :data:`FLARE22_TOLERANCES_MM`; the spacing is the ground truth's ``get_zooms()``.

If the restricted z-range of aorta/IVC/esophagus is empty (the organ occupies a single ground-truth slice)
the official code yields ``nan`` for both metrics; so do we, and the summary averages skip ``nan``.

Files are loaded the way the official script loads them: nibabel, voxel data in file order, **no
reorientation** and no resampling (NRRD and MetaImage files through SimpleITK, in ITK's index order, which
is the file's). Prediction and ground truth are matched by case name (the file name without its ending),
so ``case.nrrd`` is scored against ``case.nii.gz``. This is deliberate: reorienting would permute axes (changing
which one is "z" and the spacing order) and the numbers would no longer match the official evaluator's. Prediction
and ground truth must therefore share voxel order and shape.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from smp_diffusion_encoder._io import atomic_write_text
from smp_diffusion_encoder.data.remap import FLARE_ORGANS
from smp_diffusion_encoder.errors import (
    CorruptFileError,
    DatasetLayoutError,
    InputFileError,
    InvalidVolumeError,
    LabelMismatchError,
)
from smp_diffusion_encoder.evaluation.confusion import confusion_matrix, format_confusion_markdown, summed_confusion
from smp_diffusion_encoder.evaluation.surface import (
    compute_surface_distances,
    dice_coefficient,
    surface_dice_at_tolerance,
)

__all__ = [
    "FLARE22_TOLERANCES_MM",
    "METRIC_COLUMNS",
    "NSD_MIN_DSC",
    "Z_RESTRICTED_ORGANS",
    "CaseResult",
    "case_metrics",
    "evaluate_case",
    "evaluate_folder",
    "load_label_map",
    "format_summary_markdown",
    "mean_slice_dice",
    "slice_dice",
    "slice_organ_dice",
    "summarize",
    "write_metrics_csv",
    "write_summary_markdown",
]

#: NSD tolerance per organ in mm (official FLARE 2022 values), in ``FLARE_ORGANS`` order.
FLARE22_TOLERANCES_MM: Mapping[str, float] = dict(
    zip(FLARE_ORGANS, (5.0, 3.0, 3.0, 5.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0, 5.0, 7.0, 3.0), strict=True)
)
#: Organs scored only on the ground truth's z-range ``[zmin, zmax)``.
Z_RESTRICTED_ORGANS: tuple[str, ...] = ("Aorta", "IVC", "Esophagus")
#: Below this DSC the NSD is set to 0.
NSD_MIN_DSC = 0.2
#: Column names of the official per-case CSV.
METRIC_COLUMNS: tuple[str, ...] = ("Name", *(f"{o}_DSC" for o in FLARE_ORGANS), *(f"{o}_NSD" for o in FLARE_ORGANS))


@dataclass(frozen=True)
class CaseResult:
    """Metrics of one case.

    Attributes:
        name: file name shared by prediction and ground truth, e.g. ``"AMOS_0013.nii.gz"``.
        metrics: ``{"Liver_DSC": ..., ..., "LK_NSD": ...}`` unrounded, in [0, 1] (``nan`` see module doc).
        confusion: ``(14, 14)`` voxel counts, row = true class, column = predicted
            (:func:`~smp_diffusion_encoder.evaluation.confusion.confusion_matrix`; ids above 13 are not counted),
            or ``None``.
    """

    name: str
    metrics: Mapping[str, float]
    confusion: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def volume_ratios(self) -> dict[str, float]:
        """``{organ: predicted / true voxels}`` (``nan`` where the ground truth has none; empty without
        :attr:`confusion`)."""
        if self.confusion is None:
            return {}
        true, predicted = self.confusion.sum(axis=1), self.confusion.sum(axis=0)
        return {o: float(predicted[i] / true[i]) if true[i] else math.nan for i, o in enumerate(FLARE_ORGANS, 1)}

    def dsc(self, organ: str) -> float:
        return self.metrics[f"{organ}_DSC"]

    def nsd(self, organ: str) -> float:
        return self.metrics[f"{organ}_NSD"]


def _organ_metrics(
    gt: np.ndarray,
    pred: np.ndarray,
    label: int,
    spacing: Sequence[float],
    box: tuple[slice, ...] | None,
    z_restricted: bool,
    tolerance_mm: float,
) -> tuple[float, float]:
    """DSC and NSD of label ``label``; ``box`` is a bounding box holding every voxel of it in gt or pred."""
    if box is None:  # absent in both
        return 1.0, 1.0
    gt_box = gt[box] == label
    if not gt_box.any():  # absent in the ground truth, present in the prediction
        return 0.0, 0.0
    pred_box = pred[box] == label
    if z_restricted:
        z_index = np.flatnonzero(gt_box.any(axis=(0, 1)))
        z_lower, z_upper = int(z_index.min()), int(z_index.max())  # official: [z_lower, z_upper)
        gt_box, pred_box = gt_box[:, :, z_lower:z_upper], pred_box[:, :, z_lower:z_upper]
    dsc = dice_coefficient(gt_box, pred_box)
    if dsc < NSD_MIN_DSC:
        return dsc, 0.0
    nsd = surface_dice_at_tolerance(compute_surface_distances(gt_box, pred_box, spacing), tolerance_mm)
    return dsc, nsd


def _union_boxes(gt: np.ndarray, pred: np.ndarray, num_labels: int) -> list[tuple[slice, ...] | None]:
    """Per label 1..num_labels: the bounding box of the label in gt or pred (``None`` if in neither)."""
    boxes = []
    for a, b in zip(ndimage.find_objects(gt, num_labels), ndimage.find_objects(pred, num_labels), strict=True):
        if a is None or b is None:
            boxes.append(a if b is None else b)
        else:
            boxes.append(tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b)))
    return boxes


def case_metrics(gt: np.ndarray, pred: np.ndarray, spacing_mm: Sequence[float]) -> dict[str, float]:
    """Per-organ DSC and NSD of one case, FLARE 2022 rules (see module docstring).

    Args:
        gt: ``(X, Y, Z)`` integer label map in FLARE ids (0 background, 1..13 organs; other ids are ignored).
        pred: ``(X, Y, Z)`` label map, same shape and voxel order.
        spacing_mm: voxel size along X, Y, Z in mm, from the ground truth's header.

    Returns:
        ``{"Liver_DSC": ..., ..., "LK_DSC": ..., "Liver_NSD": ..., ..., "LK_NSD": ...}`` (unrounded).
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(f"label maps must be 3D and of equal shape, got {gt.shape} and {pred.shape}")
    if len(spacing_mm) != 3:
        raise ValueError(f"spacing_mm must have 3 entries, got {tuple(spacing_mm)}")
    gt_i = gt.astype(np.int64, copy=False) if not np.issubdtype(gt.dtype, np.integer) else gt
    pred_i = pred.astype(np.int64, copy=False) if not np.issubdtype(pred.dtype, np.integer) else pred
    boxes = _union_boxes(gt_i, pred_i, len(FLARE_ORGANS))
    dscs: dict[str, float] = {}
    nsds: dict[str, float] = {}
    for label, (organ, box) in enumerate(zip(FLARE_ORGANS, boxes, strict=True), start=1):
        dscs[f"{organ}_DSC"], nsds[f"{organ}_NSD"] = _organ_metrics(
            gt_i, pred_i, label, spacing_mm, box, organ in Z_RESTRICTED_ORGANS, FLARE22_TOLERANCES_MM[organ]
        )
    return {**dscs, **nsds}


def load_label_map(path: str | os.PathLike[str]) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a label map as the official evaluator does (file voxel order, no reorientation), with the reader the
    table of formats picks by ending (:func:`~smp_diffusion_encoder.data.io_registry.reader_for`: NIfTI through
    nibabel; NRRD and MetaImage through SimpleITK, in the file's index order).

    Returns:
        ``(labels, spacing_mm)``: ``(X, Y, Z)`` uint8 array and ``header.get_zooms()[:3]`` as floats.

    Raises:
        CorruptFileError: the file cannot be read or decoded.
        InvalidVolumeError: not 3D, or values that are not integers in 0..255.
    """
    from smp_diffusion_encoder.data.io_registry import reader_for

    path = Path(path)
    try:
        image = reader_for(path).read(path)
        data = np.asanyarray(image.dataobj)
        zooms = image.header.get_zooms()
    except InputFileError:  # corrupt, invalid, or not a volume file at all: already names the file
        raise
    except Exception as err:  # nibabel raises many types (ImageFileError, OSError, EOFError, zlib.error...)
        raise CorruptFileError(path, f"cannot be read as NIfTI ({type(err).__name__}: {err})") from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InvalidVolumeError(path, f"is {data.ndim}D with shape {data.shape}, expected a 3D label map")
    if data.dtype != np.uint8:
        if data.size and (data.min() < 0 or data.max() > 255 or not np.array_equal(data, np.round(data))):
            raise InvalidVolumeError(path, "holds values that are not integer label ids in 0..255")
        data = data.astype(np.uint8)
    if len(zooms) < 3:
        raise InvalidVolumeError(path, f"header has {len(zooms)} voxel sizes, expected 3")
    return data, (float(zooms[0]), float(zooms[1]), float(zooms[2]))


def _shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(n) for n in shape)


def evaluate_case(
    pred_path: str | os.PathLike[str],
    gt_path: str | os.PathLike[str],
    *,
    labels_convention: str = "flare",
    name: str | None = None,
) -> CaseResult:
    """Metrics of one prediction file against its ground-truth file (spacing from the ground truth), named
    ``name`` (default: the ground-truth file's name).

    ``labels_convention``: the ground truth's label ids (:data:`~smp_diffusion_encoder.data.remap.CONVENTIONS`),
    mapped to FLARE ids; ``"flare"`` (the default) takes them as they are. Predictions hold FLARE ids.

    Raises:
        LabelMismatchError: different shapes, or a label id that is not a FLARE id (0..13) in the prediction
            or in a ``"flare"`` ground truth (naming the file and the ids), as ``check-data`` refuses it.
    """
    from smp_diffusion_encoder.data.remap import remap_labels  # deferred, like the other data imports
    from smp_diffusion_encoder.data.volume import check_label_array

    gt, spacing = load_label_map(gt_path)
    if labels_convention == "flare":
        check_label_array(gt, gt_path, range(len(FLARE_ORGANS) + 1))
    else:
        gt = remap_labels(gt, labels_convention)
    pred, _ = load_label_map(pred_path)
    check_label_array(pred, pred_path, range(len(FLARE_ORGANS) + 1))
    if pred.shape != gt.shape:
        raise LabelMismatchError(
            pred_path, f"is {_shape_str(pred.shape)} but ground truth {gt_path} is {_shape_str(gt.shape)}"
        )
    known = (gt <= len(FLARE_ORGANS)) & (pred <= len(FLARE_ORGANS))
    return CaseResult(
        name or Path(gt_path).name, case_metrics(gt, pred, spacing), confusion_matrix(gt[known], pred[known])
    )


def _label_files(folder: Path) -> dict[str, Path]:
    """Case name (file name without its ending) -> label map file, for every volume file in ``folder``."""
    from smp_diffusion_encoder.data.io_registry import is_volume_file, strip_volume_suffix

    if not folder.is_dir():
        raise DatasetLayoutError(folder, "is not a folder")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and is_volume_file(p):
            case = strip_volume_suffix(p.name)
            if case in found:
                raise DatasetLayoutError(
                    folder, f"holds two label maps for case {case}: {found[case].name} and {p.name}"
                )
            found[case] = p
    return found


def _case_folder_labels(folder: Path) -> dict[str, Path]:
    """Case id -> label map of the case folders under ``folder`` (``CASE/label.nii.gz``...:
    :func:`~smp_diffusion_encoder.data.flare.case_folders`)."""
    from smp_diffusion_encoder.data.flare import CASE_LABEL_NAMES, case_folders  # deferred (nibabel, pydicom)

    found: dict[str, Path] = {}
    for case in case_folders(folder):
        if case.name in found:
            raise DatasetLayoutError(
                folder, f"holds two case folders named {case.name}: {found[case.name].parent} and {case}"
            )
        found[case.name] = next(case / n for n in CASE_LABEL_NAMES if (case / n).is_file())
    return found


def evaluate_folder(
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    progress: bool = True,
    *,
    labels_convention: str = "flare",
) -> list[CaseResult]:
    """Evaluate every ground-truth case (``*.nii.gz``, ``*.nii``, ``*.nrrd``, ``*.mha``... in ``gt_dir``; or, if it
    holds none, the label maps of the case folders under it, ``CASE/label.nii.gz``, named ``CASE.nii.gz``) against
    the file of the same case name in ``pred_dir`` (any of those endings); predictions without a ground truth
    are ignored. Results are named by the ground-truth file and sorted by case name. ``labels_convention``:
    see :func:`evaluate_case`.

    Raises:
        DatasetLayoutError: a folder is missing, ``gt_dir`` holds no NIfTI file, or a prediction is missing
            (all missing names are listed).
        CorruptFileError, InvalidVolumeError, LabelMismatchError: see :func:`evaluate_case`.
    """
    from tqdm.auto import tqdm

    from smp_diffusion_encoder.data.volume import strip_volume_suffix  # deferred (nibabel, pydicom)

    gt_files = _label_files(Path(gt_dir))
    names = {case: gt.name for case, gt in gt_files.items()}
    if not gt_files:
        gt_files = _case_folder_labels(Path(gt_dir))
        names = {case: case + gt.name[len(strip_volume_suffix(gt.name)) :] for case, gt in gt_files.items()}
    pred_files = _label_files(Path(pred_dir))
    if not gt_files:
        raise DatasetLayoutError(gt_dir, "holds no ground-truth label map (*.nii.gz, *.nrrd, *.mha...)")
    missing = [names[name] for name in gt_files if name not in pred_files]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DatasetLayoutError(pred_dir, f"has no prediction for ground-truth case(s) {shown}")
    return [
        evaluate_case(pred_files[name], gt_path, labels_convention=labels_convention, name=names[name])
        for name, gt_path in tqdm(gt_files.items(), desc="evaluate", unit="case", disable=not progress)
    ]


def _format_value(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(np.round(value, 4)))


def write_metrics_csv(results: Sequence[CaseResult], path: str | os.PathLike[str]) -> None:
    """Write the official per-case CSV (columns :data:`METRIC_COLUMNS`, values rounded to 4 decimals), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METRIC_COLUMNS)
    for result in results:
        writer.writerow([result.name, *(_format_value(result.metrics[c]) for c in METRIC_COLUMNS[1:])])
    atomic_write_text(path, buffer.getvalue())


#: Name of the mean over the organs present in each case's ground truth (the demo's and the study's headline).
MEAN_PRESENT = "Mean over organs present in the ground truth"
#: Name of the FLARE 2022 evaluator's mean: all 13 organs, an organ absent from both files scoring 1.
MEAN_FLARE = f"FLARE mean over {len(FLARE_ORGANS)} organs"


def summarize(results: Sequence[CaseResult]) -> dict[str, tuple[float, float, float, float]]:
    """Per-organ ``(DSC mean, DSC std, NSD mean, NSD std)`` over cases, then the same four numbers of each case's
    average over the organs present in its ground truth (key :data:`MEAN_PRESENT`; only when every result has
    its confusion counts, which say what the ground truth holds) and over the 13 organs (:data:`MEAN_FLARE`,
    the FLARE evaluator's mean). Population std (``ddof=0``); ``nan`` is skipped."""
    if not results:
        raise ValueError("no results to summarize")
    dsc = np.array([[r.dsc(o) for o in FLARE_ORGANS] for r in results], dtype=np.float64)  # (cases, organs)
    nsd = np.array([[r.nsd(o) for o in FLARE_ORGANS] for r in results], dtype=np.float64)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns give nan, on purpose
        stats = np.stack(
            [np.nanmean(dsc, 0), np.nanstd(dsc, 0), np.nanmean(nsd, 0), np.nanstd(nsd, 0)], axis=1
        )  # (organs, 4)
        table = {organ: tuple(float(v) for v in row) for organ, row in zip(FLARE_ORGANS, stats, strict=True)}
        if all(r.confusion is not None for r in results):
            present = np.array([r.confusion.sum(axis=1)[1:] > 0 for r in results])  # type: ignore[union-attr]
            table[MEAN_PRESENT] = _mean_std_of_case_means(
                np.where(present, dsc, np.nan), np.where(present, nsd, np.nan)
            )
        table[MEAN_FLARE] = _mean_std_of_case_means(dsc, nsd)
    return table  # type: ignore[return-value]


def _mean_std_of_case_means(dsc: np.ndarray, nsd: np.ndarray) -> tuple[float, ...]:
    per_case_dsc, per_case_nsd = np.nanmean(dsc, 1), np.nanmean(nsd, 1)  # (cases,)
    return tuple(
        float(v)
        for v in (np.nanmean(per_case_dsc), np.nanstd(per_case_dsc), np.nanmean(per_case_nsd), np.nanstd(per_case_nsd))
    )


def format_summary_markdown(results: Sequence[CaseResult]) -> str:
    """Markdown table of :func:`summarize`: one row per organ and the mean rows (:data:`MEAN_PRESENT`,
    :data:`MEAN_FLARE`), 4 decimals; with
    confusion counts also the predicted / true volume (mean over the cases holding the organ) and, below, where
    each true organ's voxels were predicted (voxels of all cases added up)."""
    errors = all(r.confusion is not None for r in results)
    lines = [
        f"FLARE 2022 metrics over {len(results)} case(s) (mean ± std)",
        "",
        "| Organ | DSC | NSD |" + (" predicted / true volume |" if errors else ""),
        "| --- | --- | --- |" + (" --- |" if errors else ""),
    ]
    for organ, (dsc_mean, dsc_std, nsd_mean, nsd_std) in summarize(results).items():
        mean_row = organ in (MEAN_PRESENT, MEAN_FLARE)
        name = f"**{organ}**" if mean_row else organ
        row = f"| {name} | {dsc_mean:.4f} ± {dsc_std:.4f} | {nsd_mean:.4f} ± {nsd_std:.4f} |"
        if errors and mean_row:
            row += " – |"
        elif errors:
            ratios = [r.volume_ratios.get(organ, math.nan) for r in results]
            ratios = [v for v in ratios if not math.isnan(v)]
            row += f" {np.mean(ratios):.2f} |" if ratios else " – |"
        lines.append(row)
    if errors:
        lines += [
            "",
            format_confusion_markdown(
                summed_confusion([r.confusion for r in results]),  # type: ignore[misc]
                title="Where each true organ's voxels were predicted (all cases)",
            ),
        ]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_summary_markdown(results: Sequence[CaseResult], path: str | os.PathLike[str]) -> None:
    """Write :func:`format_summary_markdown` to ``path`` atomically."""
    atomic_write_text(path, format_summary_markdown(results))


def slice_dice(gt2d: np.ndarray, pred2d: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class Dice of one 2D slice (or any pair of equal-shape label arrays), background included.

    Convention (same as FLARE 2022): a class absent in both gt and prediction scores 1.0; present in
    exactly one, 0.0. Drop entry 0 for foreground-only scores.

    Args:
        gt2d: ``(H, W)`` integer labels in ``[0, num_classes)``.
        pred2d: ``(H, W)`` integer labels in ``[0, num_classes)``.
        num_classes: number of classes including background.

    Returns:
        ``(num_classes,)`` float64 array of Dice scores.

    Example:
        >>> slice_dice(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [1, 0]]), 3).round(3).tolist()
        [0.667, 0.8, 1.0]
    """
    gt = np.asarray(gt2d)
    pred = np.asarray(pred2d)
    if gt.shape != pred.shape:
        raise ValueError(f"gt and prediction must have equal shape, got {gt.shape} and {pred.shape}")
    for name, arr in (("gt", gt), ("prediction", pred)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in [0, {num_classes}), got {arr.min()}..{arr.max()}")
    gt_flat = gt.reshape(-1).astype(np.int64, copy=False)
    pred_flat = pred.reshape(-1).astype(np.int64, copy=False)
    gt_count = np.bincount(gt_flat, minlength=num_classes)
    pred_count = np.bincount(pred_flat, minlength=num_classes)
    intersection = np.bincount(gt_flat[gt_flat == pred_flat], minlength=num_classes)
    total = gt_count + pred_count
    return np.where(total == 0, 1.0, 2.0 * intersection / np.maximum(total, 1))


def slice_organ_dice(gt2d: np.ndarray, pred2d: np.ndarray, num_classes: int) -> float:
    """Mean DSC of one slice over the organs present in its ground truth or its prediction; ``nan`` when neither
    holds an organ.

    The one rule for scoring slices (validation, feature selection, figures): an organ absent from both is left
    out (its 1.0 from :func:`slice_dice` would inflate the score); a slice without any organ in either has no
    organ score: :func:`mean_slice_dice` counts it 1.0 (nothing to find, nothing found), figures say "no organ".

    Example:
        >>> slice_organ_dice(np.array([[0, 1], [2, 2]]), np.array([[0, 1], [0, 2]]), 4)
        0.8333333333333333
        >>> slice_organ_dice(np.zeros((2, 2), int), np.zeros((2, 2), int), 4)
        nan
    """
    present = np.zeros(num_classes, dtype=bool)
    present[np.unique(gt2d)] = present[np.unique(pred2d)] = True
    present[0] = False
    return float(slice_dice(gt2d, pred2d, num_classes)[present].mean()) if present.any() else math.nan


def mean_slice_dice(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Mean over slices of :func:`slice_organ_dice`, an empty slice counting 1.0; ``nan`` for no slices.

    ``gt``, ``pred``: ``(N, H, W)`` label ids.
    """
    scores = [slice_organ_dice(g, p, num_classes) for g, p in zip(gt, pred)]
    return float(np.mean([1.0 if math.isnan(x) else x for x in scores])) if scores else math.nan
