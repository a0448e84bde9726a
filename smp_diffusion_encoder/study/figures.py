"""Study figures: mean organ DSC against the label budget, and per-slice organ overlays of several methods.

Matplotlib runs on the Agg backend; every figure is closed after saving and every PNG is written atomically.

Example:
    >>> plot_dsc_vs_budget(rows, "runs/study/dsc_vs_budget.png")                       # doctest: +SKIP
    >>> render_overlays(hu, gt, {"ddpm-ct + Unet": pred}, "runs/study/overlays.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from smp_diffusion_encoder._io import atomic_path
from smp_diffusion_encoder.data.remap import FLARE_NUM_CLASSES, FLARE_ORGANS
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.evaluation import slice_dice
from smp_diffusion_encoder.study.results import aggregate, budget_slices

__all__ = ["ORGAN_COLORS", "plot_dsc_vs_budget", "render_overlays"]

#: Overlay colour of FLARE ids 1..13 (entry ``i`` is id ``i + 1``, organ ``FLARE_ORGANS[i]``).
ORGAN_COLORS: tuple[str, ...] = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#ffe119",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
    "#dcbeff",
    "#9a6324",
)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str], dpi: int) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def plot_dsc_vs_budget(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, metric: Literal["DSC", "NSD"] = "DSC"
) -> Path:
    """Line plot of the mean organ ``metric`` (y, 0..1) against the number of labeled training slices (x, log
    scale, ticks ``"budget\\n(slices)"``), one line per method and one panel per protocol (held-out set). Error
    bars (std over seeds) only where there are several seeds. Written atomically as PNG; returns ``path``."""
    if metric not in ("DSC", "NSD"):
        raise ConfigError(f"metric must be 'DSC' or 'NSD', got {metric!r}")
    results = aggregate(rows)
    if not results:
        raise ValueError("no result rows to plot")
    protocols = list(dict.fromkeys(r.protocol for r in results))
    methods = list(dict.fromkeys(r.method for r in results))
    plt = _pyplot()
    from matplotlib.ticker import NullLocator

    fig, axes = plt.subplots(
        1, len(protocols), figsize=(6.0 * len(protocols) + 1.5, 5.0), layout="constrained", squeeze=False, sharey=True
    )
    try:
        for ax, protocol in zip(axes[0], protocols):
            mine = [r for r in results if r.protocol == protocol]
            ticks: dict[float, list[str]] = {}
            for budget, n in budget_slices(mine).items():
                ticks.setdefault(float(n), []).append(budget)
            log = min(ticks) > 0
            for i, method in enumerate(methods):
                line = [r for r in mine if r.method == method]
                if not line:
                    continue
                shift = 1.03 ** (i - (len(methods) - 1) / 2) if log else 1.0  # keeps error bars apart
                spread = [getattr(r, f"{metric.lower()}_std") if r.n_seeds > 1 else math.nan for r in line]
                ax.errorbar(
                    [r.n_train_slices * shift for r in line],
                    [getattr(r, f"{metric.lower()}_mean") for r in line],
                    yerr=None if all(math.isnan(v) for v in spread) else spread,
                    label=line[0].method_label if ax is axes[0][0] else None,
                    marker=_MARKERS[i % len(_MARKERS)],
                    color=f"C{i % 10}",
                    markersize=6,
                    linewidth=1.8,
                    capsize=4,
                    elinewidth=1.2,
                )
            ax.set_xscale("log" if log else "linear")
            ax.set_xticks(list(ticks), ["/".join(names) + f"\n({n:g})" for n, names in ticks.items()])
            ax.xaxis.set_minor_locator(NullLocator())
            if log:
                ax.set_xlim(min(ticks) / 1.5, max(ticks) * 1.5)
            ax.set_ylim(0.0, 1.0)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=10)
            ax.set_xlabel("label budget (labeled training slices)", fontsize=11)
            low, high = min(r.n_seeds for r in mine), max(r.n_seeds for r in mine)
            seeds = str(low) if low == high else f"{low}–{high}"
            bars = f"error bars: std over {seeds} seeds" if high > 1 else "1 seed, no error bars"
            ax.set_title(f"{protocol} ({bars})", fontsize=11)
        over = {r.averaged_over for r in results}
        over_text = "organs present in the ground truth" if over == {"present organs"} else " / ".join(sorted(over))
        axes[0][0].set_ylabel(f"mean organ {metric} ({over_text})", fontsize=11)
        fig.suptitle(f"Mean organ {metric} vs label budget", fontsize=12)
        longest = max(len(r.method_label) for r in results)
        fig.legend(
            loc="outside lower center",
            ncol=max(1, min(len(methods), int(42 * len(protocols)) // (longest + 8))),
            fontsize=10,
            frameon=False,
        )
        return _save(fig, path, dpi=110)
    finally:
        plt.close(fig)


def render_overlays(
    image: np.ndarray,
    gt: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    *,
    window: tuple[float, float] | None = (-160.0, 240.0),
    title: str = "",
    row_labels: Sequence[str] = (),
    reference: str = "ground truth",
) -> Path:
    """Save a PNG grid: one row per slice; columns image, the reference labels, then one overlay per method.

    Args:
        image: ``(N, H, W)`` float HU, shown in ``window``; with ``window=None`` already scaled to [-1, 1].
        gt: ``(N, H, W)`` FLARE ids 0..13.
        predictions: method label -> ``(N, H, W)`` FLARE ids; each panel title gives that slice's mean DSC over
            the organs present in its ground truth or prediction.
        row_labels: optional name per slice (default ``"slice i"``).
        reference: name of the ``gt`` column (e.g. ``"pseudo ground truth (TotalSegmentator)"``); a line under
            the figure says what the per-panel "slice DSC" is.

    Organs are drawn in :data:`ORGAN_COLORS` (id 0 transparent) with one colour legend. Returns ``path``.
    """
    image = np.asarray(image, dtype=np.float64)
    maps = {reference: np.asarray(gt), **{k: np.asarray(v) for k, v in predictions.items()}}
    if image.ndim != 3:
        raise ValueError(f"image must be (N, H, W), got shape {image.shape}")
    for name, labels in maps.items():
        if labels.shape != image.shape:
            raise ValueError(f"{name} labels have shape {labels.shape} but image has {image.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= FLARE_NUM_CLASSES):
            raise ValueError(f"{name} labels must be FLARE ids 0..{FLARE_NUM_CLASSES - 1}")
    if row_labels and len(row_labels) != len(image):
        raise ValueError(f"{len(row_labels)} row labels for {len(image)} slices")
    plt = _pyplot()
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch

    lut = np.array([(0.0, 0.0, 0.0, 0.0), *(to_rgba(c, alpha=0.5) for c in ORGAN_COLORS)])
    n, height, width = image.shape
    panel = 2.4
    columns = [("image", None), *maps.items()]
    figsize = (panel * len(columns), panel * height / width * n + 1.1 + 0.4 * bool(title))
    vmin, vmax = window if window is not None else (-1.0, 1.0)
    fig, axes = plt.subplots(n, len(columns), figsize=figsize, squeeze=False, layout="constrained")
    try:
        for i in range(n):
            for j, (name, labels) in enumerate(columns):
                ax = axes[i, j]
                ax.imshow(image[i], cmap="gray", vmin=vmin, vmax=vmax)
                if labels is not None:
                    ax.imshow(lut[labels[i]], interpolation="nearest")
                text = [textwrap.fill(name, 26)] if i == 0 else []
                if j >= 2:
                    dice = _slice_organ_dice(maps[reference][i], labels[i])
                    text.append("no organ" if math.isnan(dice) else f"slice DSC {dice:.2f}")
                ax.set_title("\n".join(text), fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[i, 0].set_ylabel(row_labels[i] if row_labels else f"slice {i}", fontsize=9)
        handles = [Patch(facecolor=c, label=o) for c, o in zip(ORGAN_COLORS, FLARE_ORGANS, strict=True)]
        legend_rows = math.ceil(len(handles) / max(1, int(figsize[0] / 1.05)))  # about 1 inch per entry
        legend = fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=math.ceil(len(handles) / legend_rows),
            fontsize=8,
            frameon=False,
            handlelength=1.2,
            columnspacing=1.0,
        )
        legend.set_title(
            f"slice DSC: this slice's mean DSC against the {reference}, over the organs in either", prop={"size": 8}
        )
        if title:
            fig.suptitle(title, fontsize=11)
        return _save(fig, path, dpi=100)
    finally:
        plt.close(fig)


def _slice_organ_dice(gt2d: np.ndarray, pred2d: np.ndarray) -> float:
    """Mean DSC over the organs present in ``gt2d`` or ``pred2d`` (``nan`` when there are none)."""
    present = np.zeros(FLARE_NUM_CLASSES, dtype=bool)
    present[np.unique(gt2d)] = present[np.unique(pred2d)] = True
    present[0] = False
    return float(slice_dice(gt2d, pred2d, FLARE_NUM_CLASSES)[present].mean()) if present.any() else math.nan
