"""The contact sheet of ``smp-diffusion suggest``: the suggested slices as the model sees them, its current
prediction overlaid (the study's organ colours), and where it is unsure.

Per suggestion two panels: the CT slice (HU window of the model) with the predicted organs, and the same slice
with the uncertainty map of the measure on top (hot colours: unsure). The title gives the rank, scan, slice,
position and the score; three suggestions per row. Written atomically as PNG.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smp_diffusion_encoder._io import atomic_path
from smp_diffusion_encoder.data.remap import FLARE_NUM_CLASSES, FLARE_ORGANS
from smp_diffusion_encoder.study.figures import ORGAN_COLORS


@dataclass(frozen=True)
class SheetEntry:
    """One suggestion to show: ``image`` ``(S, S)`` in [-1, 1], ``labels`` ``(S, S)`` predicted FLARE ids,
    ``uncertainty`` ``(S, S)`` (any non-negative scale), ``title`` (a line or two)."""

    image: np.ndarray
    labels: np.ndarray
    uncertainty: np.ndarray
    title: str


def render_contact_sheet(
    entries: Sequence[SheetEntry],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    per_row: int = 3,
    panel_inches: float = 2.2,
    dpi: int = 80,
) -> Path:
    """Save the sheet (see the module docstring); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch

    if not entries:
        raise ValueError("no suggestion to show")
    lut = np.array([(0.0, 0.0, 0.0, 0.0), *(to_rgba(c, alpha=0.55) for c in ORGAN_COLORS)])
    rows = math.ceil(len(entries) / per_row)
    cols = 2 * min(per_row, len(entries))
    top = max(float(e.uncertainty.max()) for e in entries) or 1.0
    fig, axes = plt.subplots(
        rows, cols, figsize=(panel_inches * cols, panel_inches * 1.18 * rows + 0.9), squeeze=False, layout="constrained"
    )
    try:
        for ax in axes.flat:
            ax.set_axis_off()
        for i, entry in enumerate(entries):
            r, c = divmod(i, per_row)
            left, right = axes[r, 2 * c], axes[r, 2 * c + 1]
            labels = np.clip(np.asarray(entry.labels, dtype=np.int64), 0, FLARE_NUM_CLASSES - 1)
            left.imshow(entry.image, cmap="gray", vmin=-1.0, vmax=1.0)
            left.imshow(lut[labels], interpolation="nearest")
            left.set_title(textwrap.fill(entry.title, 34), fontsize=7, loc="left")
            right.imshow(entry.image, cmap="gray", vmin=-1.0, vmax=1.0)
            heat = np.ma.masked_less(entry.uncertainty, 0.02 * top)
            right.imshow(heat, cmap="inferno", vmin=0.0, vmax=top, alpha=0.75, interpolation="nearest")
            right.set_title("where the model is unsure", fontsize=7)
        present = sorted({int(v) for e in entries for v in np.unique(e.labels) if 0 < v < FLARE_NUM_CLASSES})
        handles = [Patch(facecolor=ORGAN_COLORS[v - 1], label=FLARE_ORGANS[v - 1]) for v in present]
        if handles:
            fig.legend(
                handles=handles,
                loc="outside lower center",
                ncol=min(len(handles), 7),
                fontsize=7,
                frameon=False,
                title="current prediction",
                title_fontsize=7,
            )
        if title:
            fig.suptitle(title, fontsize=9)
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
        return path
    finally:
        plt.close(fig)
