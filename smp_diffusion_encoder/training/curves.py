"""A run's training curves: ``metrics.csv``, the titled ``loss.png`` (loss and validation), and whether the
loss had flattened by the end.

Flattening (:func:`loss_flattened`): the mean training loss over the last 10% of logged rows is compared with
the 10% before; a relative drop below 5% counts as flat. With the cosine learning-rate decay of few-shot
runs (:mod:`smp_diffusion_encoder.finetune.schedule`) a run that is still falling at the end needed more
steps.

Example:
    >>> rows = [{"step": s, "loss": 1.0 + 1.0 / s} for s in range(1, 101)]   # converging to 1
    >>> loss_flattened(rows).flat
    True
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smp_diffusion_encoder._io import atomic_path, atomic_write_text

FLAT_WINDOW = 0.1
FLAT_TOLERANCE = 0.05


@dataclass(frozen=True)
class Flatness:
    """``flat``: whether the loss had flattened; ``last``/``before``: the two window means; ``text``: one line."""

    flat: bool | None
    last: float
    before: float
    text: str


def loss_flattened(
    history: list[dict[str, Any]], *, window: float = FLAT_WINDOW, tolerance: float = FLAT_TOLERANCE
) -> Flatness:
    """Compare the mean ``loss`` of the last ``window`` share of logged rows with the share before it."""
    losses = [float(r["loss"]) for r in history if isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])]
    n = max(1, round(window * len(losses)))
    if len(losses) < 2 * n or len(losses) < 4:
        return Flatness(
            None, math.nan, math.nan, f"too few logged steps ({len(losses)}) to tell whether the loss flattened"
        )
    last, before = sum(losses[-n:]) / n, sum(losses[-2 * n : -n]) / n
    drop = (before - last) / abs(before) if before else 0.0
    flat = drop < tolerance
    text = (
        f"loss {'had flattened' if flat else 'was still falling'}: mean {last:.4g} over the last "
        f"{window:.0%} of the run vs {before:.4g} over the {window:.0%} before ({drop:+.1%} drop; flat "
        f"means < {tolerance:.0%})"
    )
    return Flatness(flat, last, before, text)


def write_metrics_csv(path: str | Path, history: list[dict[str, Any]]) -> None:
    """Write the history as CSV atomically: ``step, loss, lr, images_per_s`` first, then other columns."""
    first = ["step", "loss", "lr", "images_per_s"]
    rest = sorted({k for row in history for k in row} - set(first))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=first + rest, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buf.getvalue())


def plot_training_curves(path: str | Path, history: list[dict[str, Any]], *, title: str = "") -> None:
    """Training loss against step (log scale when positive) and, on a second axis, every ``val_*`` column;
    titled; written atomically as PNG (matplotlib Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [
            (r["step"], float(r[key]))
            for r in history
            if isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))
        ]
        return ([p[0] for p in pts], [p[1] for p in pts]) if pts else ([], [])

    fig = Figure(figsize=(6.5, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps, losses = series("loss")
    if steps:
        ax.plot(steps, losses, lw=1, color="C0", label="training loss")
        if min(losses) > 0:
            ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    val_keys = sorted({k for r in history for k in r if k.startswith("val_")})
    handles, labels = ax.get_legend_handles_labels()
    if val_keys:
        ax2 = ax.twinx()
        for i, key in enumerate(val_keys):
            x, y = series(key)
            ax2.plot(x, y, marker="o", ms=3, lw=1, color=f"C{i + 1}", label=key.replace("_", " "))
        ax2.set_ylabel("validation")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, loc="upper right", fontsize=8)
    flat = loss_flattened(history)
    heading = title or "training curves"
    if flat.flat is not None:
        heading += f"\n{'loss flattened' if flat.flat else 'loss still falling at the end'}"
    ax.set_title(heading, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format="png")
