"""The labeling-loop benchmark's own report section (``benchmarks/labeling_loop.py``): does suggest at the second
round reach evenly spaced slices at the last, per-seed rounds, and what the uncertainty measures track."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from smp_diffusion_encoder.labeling.uncertainty import MEASURES
from smp_diffusion_encoder.study.results import aggregate


def loop_section(rows: list[dict[str, Any]], rounds: list[int]) -> str:
    """The loop's own questions: does suggest at the second round reach evenly spaced at the last? Do the
    uncertainty measures rank the slices the model gets wrong (rho)? Which distance did suggest use?"""
    results = {(r.protocol, r.method, r.n_train_slices): r for r in aggregate(rows)}
    few, many = rounds[min(1, len(rounds) - 1)], rounds[-1]
    lines = [
        "",
        "## The loop's questions",
        "",
        f"**Does `suggest` with {few} labeled slices reach evenly spaced slices with {many}?** Mean DSC over the "
        f"organs present (mean +- std over seeds):",
        "",
    ]
    for protocol in dict.fromkeys(r["protocol"] for r in rows):
        cells = []
        for method, n in (("suggest", few), ("evenly", few), ("random", few), ("suggest", many), ("evenly", many)):
            r = results.get((protocol, method, n))
            if r is not None:
                cells.append(f"{method} {n}: {r.dsc_mean:.3f} +- {r.dsc_std:.3f} ({_seeds(rows, method, n)})")
        lines.append(f"- {protocol}: " + "; ".join(cells))
    lines += ["", *seed_table(rows, rounds)]
    models: dict[tuple[int, int, str], dict[str, Any]] = {}
    for r in rows:  # one entry per trained model (the start round is shared by the strategies)
        models.setdefault((int(r["seed"]), int(r["n_train_slices"]), str(r["labeled"])), r)
    lines += [
        "",
        "**Do the uncertainty measures find the slices the model gets wrong?** Spearman correlation between "
        "each measure and the real error over the pool's unlabeled slices (model space), per trained model; "
        "mean +- std over the models of each round (every strategy's). Two kinds of error: 1 - slice DSC (`dsc`: "
        "every organ on the slice weighs the same: what `dice` estimates) and the wrongly labeled area in cm² "
        "(`area`: what `error`, `entropy` and `tta` estimate); a column is empty for rounds run before it was "
        "recorded:",
        "",
        "| labeled slices | models | "
        + " | ".join(f"rho `{m}` {kind}" for kind in ("dsc", "area") for m in MEASURES)
        + " |",
        "| --- | --- | " + " | ".join("---" for _ in range(2 * len(MEASURES))) + " |",
    ]
    for n in rounds:
        mine = [m for (s, k, _), m in models.items() if k == n]
        if not mine:
            continue
        cells = []
        for key in [f"rho_{m}" for m in MEASURES] + [f"rho_area_{m}" for m in MEASURES]:
            values = np.array([number(m.get(key)) for m in mine])
            values = values[np.isfinite(values)]
            cells.append(f"{values.mean():.2f} +- {values.std():.2f}" if values.size else "-")
        lines.append(f"| {n} | {len(mine)} | " + " | ".join(cells) + " |")
    used = {}
    for r in rows:
        if r["method"] == "suggest" and not math.isnan(float(r.get("distance_mm", math.nan))):
            used.setdefault(int(r["n_train_slices"]), set()).add(float(r["distance_mm"]))
    if used:
        lines += [
            "",
            "Distance `suggest` kept between slices (mm; it steps down where the pool has too few slices "
            "that far apart): "
            + "; ".join(f"after {n}: {', '.join(f'{d:g}' for d in sorted(ds))}" for n, ds in sorted(used.items())),
        ]
    return "\n".join(lines) + "\n"


def _seeds(rows: list[dict[str, Any]], method: str, n: int) -> str:
    seeds = sorted({int(r["seed"]) for r in rows if r["method"] == method and int(r["n_train_slices"]) == n})
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def seed_table(rows: list[dict[str, Any]], rounds: list[int]) -> list[str]:
    """Markdown lines: per seed and strategy, the mean DSC over the organs present at every round (within-volume /
    cross-patient; "-" where the round was not run), so which seeds stand behind each mean is plain."""
    cell: dict[tuple[int, str, int], dict[str, float]] = {}
    for r in rows:
        key = (int(r["seed"]), str(r["method"]), int(r["n_train_slices"]))
        cell.setdefault(key, {})[str(r["protocol"])] = number(r["present_DSC"])
    protocols = list(dict.fromkeys(str(r["protocol"]) for r in rows))
    lines = [
        f"Per seed (mean DSC over the organs present, {' / '.join(protocols)}):",
        "",
        "| seed | strategy | " + " | ".join(f"{n} slices" for n in rounds) + " |",
        "| --- | --- | " + " | ".join("---" for _ in rounds) + " |",
    ]
    for seed in sorted({k[0] for k in cell}):
        for method in dict.fromkeys(str(r["method"]) for r in rows):
            values = [cell.get((seed, method, n)) for n in rounds]
            if not any(values):
                continue
            texts = [" / ".join(f"{v.get(p, math.nan):.3f}" for p in protocols) if v else "-" for v in values]
            lines.append(f"| {seed} | {method} | " + " | ".join(texts) + " |")
    return lines


def number(value: Any) -> float:
    """A results.csv cell as a float; nan where the column is empty or absent (rows of an older run)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
