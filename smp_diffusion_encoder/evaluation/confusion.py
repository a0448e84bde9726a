"""Errors a user can see: predicted-to-true volume per organ, and which label the prediction puts inside each
true organ.

A DSC of 0.5 can mean half the organ found, or the organ found twice over, or the organ found and its neighbour
swallowed. Two plain numbers tell these apart:

* **volume ratio** (:func:`volume_ratios`): predicted voxels of an organ over its true voxels (1.0 = right size;
  2.0 = twice too large; ``nan`` where the ground truth has none of it);
* **confusion table** (:func:`confusion_matrix`, :func:`format_confusion_markdown`): for each true organ, the
  share of its voxels the prediction labels as each class (background included), so "right kidney: liver 75%"
  shows an enhanced kidney swallowed by the liver, and "left kidney: spleen 60%" a swapped organ.

Both use all voxels of the two maps as given (same grid), not FLARE's z-range rule for tubular organs.

Example:
    >>> gt = np.array([[1, 1, 2, 2]]); pred = np.array([[1, 1, 1, 0]])
    >>> volume_ratios(gt, pred)["Liver"], volume_ratios(gt, pred)["RK"]
    (1.5, 0.0)
    >>> confusion_matrix(gt, pred)[2, :3].tolist()        # true RK voxels: 1 background, 1 liver
    [1, 1, 0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from smp_diffusion_encoder.data.remap import FLARE_NUM_CLASSES, FLARE_ORGANS

#: Class names of the confusion table's rows and columns: background, then :data:`FLARE_ORGANS`.
CLASS_NAMES: tuple[str, ...] = ("background", *FLARE_ORGANS)


def volume_ratios(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """``{organ: predicted voxels / true voxels}`` for every FLARE organ (``nan`` if absent from ``gt``)."""
    counts = confusion_matrix(gt, pred)
    true, predicted = counts.sum(axis=1), counts.sum(axis=0)
    return {
        organ: float(predicted[i] / true[i]) if true[i] else float("nan")
        for i, organ in enumerate(FLARE_ORGANS, start=1)
    }


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int = FLARE_NUM_CLASSES) -> np.ndarray:
    """``(K, K)`` int64 voxel counts, row = true class, column = predicted class, ``K = num_classes``.

    Raises:
        ValueError: shapes differ, or an id lies outside ``[0, num_classes)``.
    """
    g, p = np.asarray(gt).reshape(-1), np.asarray(pred).reshape(-1)
    if np.asarray(gt).shape != np.asarray(pred).shape:
        raise ValueError(f"ground truth {np.asarray(gt).shape} and prediction {np.asarray(pred).shape} differ in shape")
    for name, a in (("ground truth", g), ("prediction", p)):
        if a.size and (int(a.min()) < 0 or int(a.max()) >= num_classes):
            raise ValueError(f"{name} ids must lie in [0, {num_classes}), got {int(a.min())}..{int(a.max())}")
    flat = g.astype(np.int64) * num_classes + p.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def confusion_shares(counts: np.ndarray) -> dict[str, dict[str, float]]:
    """``{true organ: {predicted class: share of its voxels}}`` for the organs present (rows of ``counts``
    with voxels), shares in [0, 1] summing to 1, classes in :data:`CLASS_NAMES` order."""
    out: dict[str, dict[str, float]] = {}
    for i, organ in enumerate(CLASS_NAMES[1:], start=1):
        total = int(counts[i].sum())
        if total:
            out[organ] = {CLASS_NAMES[j]: float(counts[i, j] / total) for j in range(len(CLASS_NAMES))}
    return out


def format_confusion_markdown(
    counts: np.ndarray, ratios: Mapping[str, float] | None = None, *, min_share: float = 0.02, title: str = ""
) -> str:
    """A markdown table: one row per true organ present, its volume ratio (computed from ``counts`` unless
    given) and where its voxels went, largest shares first (shares under ``min_share`` are left out)."""
    shares = confusion_shares(counts)
    if ratios is None:
        true, predicted = counts.sum(axis=1), counts.sum(axis=0)
        ratios = {o: float(predicted[i] / true[i]) for i, o in enumerate(CLASS_NAMES) if i and true[i]}
    lines = ([title, ""] if title else []) + [
        "| true organ | predicted / true volume | where its voxels went (share of the true organ) |",
        "| --- | --- | --- |",
    ]
    for organ, row in shares.items():
        parts = [
            f"{'**' if name == organ else ''}{name} {share:.0%}{'**' if name == organ else ''}"
            for name, share in sorted(row.items(), key=lambda kv: -kv[1])
            if share >= min_share
        ]
        ratio = ratios.get(organ, float("nan"))
        lines.append(f"| {organ} | {ratio:.2f} | {', '.join(parts) or '-'} |")
    return "\n".join(lines) + "\n"


def summed_confusion(matrices: Sequence[np.ndarray]) -> np.ndarray:
    """Voxel counts of several cases added up (cases of one grid or not: counts are counts)."""
    if not matrices:
        raise ValueError("no confusion matrices to sum")
    return np.sum(np.stack(matrices), axis=0)
