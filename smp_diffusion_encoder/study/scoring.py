"""Scoring a trained model on a labeled scan the way a user's ``predict`` + ``evaluate`` would (FLARE 2022 metrics).

Used by :func:`~smp_diffusion_encoder.study.protocol.run_study` for every held-out set, and by benchmarks that
predict on their own (:func:`slice_metrics`).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from smp_diffusion_encoder.data.flare import Case
from smp_diffusion_encoder.data.labeled_slices import read_label_map
from smp_diffusion_encoder.data.remap import FLARE_ORGANS
from smp_diffusion_encoder.data.slicer_seg import is_slicer_segmentation
from smp_diffusion_encoder.data.volume import Volume, check_pair, read_volume
from smp_diffusion_encoder.evaluation import case_metrics
from smp_diffusion_encoder.inference import Segmenter, predict_files, predict_volume


def labeled_slices(case: Case, table: Mapping[str, int] | None = None) -> tuple[int, ...]:
    """The slices of ``case`` to score: those its sidecar lists when it is partly labeled, else ``()`` (all)."""
    label = read_label_map(case.label, read_volume(case.image), table=table)  # type: ignore[arg-type]
    return label.labeled or ()


def score(
    model: Segmenter,
    case: Case,
    zs: Sequence[int] = (),
    *,
    device: str = "auto",
    precision: str = "auto",
    label_table: Mapping[str, int] | None = None,
) -> tuple[dict[str, float], np.ndarray, np.ndarray, tuple[int, ...]]:
    """FLARE metrics of ``model`` on ``case``: the whole scan (``zs`` empty) or its slices ``zs`` only.

    A whole scan is segmented as ``smp-diffusion predict`` does (:func:`~smp_diffusion_encoder.inference.predict_files`:
    the label map is written with the input's geometry and read back) and checked to lie on the label file's
    grid. For slices ``zs`` of a volume the whole volume is predicted too (as a user would: the model folder's
    post-processing may look at neighbouring slices) and only ``zs`` are kept. Both are scored with the label
    file's voxel order and spacing, the maps zeroed outside the scored slices. Returns ``(metrics, gt, pred, z)``
    with the canonical ``(len(z), Y, X)`` label maps of the scored slices.
    """
    if is_slicer_segmentation(case.label):  # type: ignore[arg-type]  # a 3D Slicer segmentation: on the image's grid
        label = read_label_map(case.label, read_volume(case.image), table=label_table).volume  # type: ignore[arg-type]
    else:
        label = read_volume(case.label, kind="label")  # type: ignore[arg-type]
    index = np.arange(label.array.shape[0]) if not len(zs) else np.asarray(zs, dtype=np.int64)
    pred_full = np.zeros_like(label.array)
    if len(zs):
        image = read_volume(case.image)
        check_pair(image, label)
        # as a user would: predict_volume predicts the whole volume when post-processing looks at other slices
        pred_full[index] = predict_volume(model, image, device=device, precision=precision, slices=index).labels
    else:
        with tempfile.TemporaryDirectory(prefix="smp-diffusion-score-") as tmp:
            report = predict_files([case.image], model, tmp, device=device, progress=False, precision=precision)
            pred = read_volume(report.written[next(iter(report.written))][-1], kind="label")
        check_pair(label, pred)  # same grid: a misplaced label map never gets a score
        pred_full = pred.array
    metrics = slice_metrics(label, pred_full, index)
    return metrics, label.array[index], pred_full[index], tuple(int(z) for z in index)


def slice_metrics(label: Volume, pred: np.ndarray, index: np.ndarray) -> dict[str, float]:
    """FLARE 2022 metrics (:func:`~smp_diffusion_encoder.evaluation.case_metrics`) of ``pred``, a canonical
    ``(Z, Y, X)`` label map on ``label``'s grid, on the slices ``index`` only: both maps zeroed elsewhere, scored
    in the label file's voxel order with its spacing (mm)."""
    gt_kept, pred_kept = np.zeros_like(label.array), np.zeros_like(label.array)
    gt_kept[index], pred_kept[index] = label.array[index], pred[index]
    spacing = tuple(float(s) for s in label.header.get_zooms()[:3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return case_metrics(label.to_original(gt_kept), label.to_original(pred_kept), spacing)


def organs_present(gt: np.ndarray) -> list[str]:
    """The FLARE organ names (:data:`~smp_diffusion_encoder.data.remap.FLARE_ORGANS`) with voxels in ``gt``."""
    ids = set(np.unique(gt).tolist())
    return [organ for label, organ in enumerate(FLARE_ORGANS, start=1) if label in ids]


__all__ = ["labeled_slices", "organs_present", "score", "slice_metrics"]
