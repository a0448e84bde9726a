"""Study report: a readable markdown summary (tables of mean organ DSC/NSD and per-organ DSC) plus the files
behind it (``results.csv``, ``dsc_vs_budget.png``).

Statistics over seeds: per seed the mean over evaluated cases, then mean and population std over seeds (see
:mod:`.results`). The report states numbers only; conclusions are the caller's ``context`` text.

Example:
    >>> summary = write_report(rows, "runs/study", title="Few-shot FLARE", context="Run with ...")  # doctest: +SKIP
    >>> summary.name                                                                                 # doctest: +SKIP
    'summary.md'
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smp_diffusion_encoder._io import atomic_write_text
from smp_diffusion_encoder.data.remap import FLARE_LABELS, FLARE_ORGANS
from smp_diffusion_encoder.evaluation.confusion import format_confusion_markdown, summed_confusion
from smp_diffusion_encoder.evaluation.flare import MEAN_FLARE, MEAN_PRESENT
from smp_diffusion_encoder.study.figures import plot_dsc_vs_budget
from smp_diffusion_encoder.study.results import BudgetResult, aggregate, budget_slices, write_results_csv

__all__ = ["format_report_markdown", "write_report"]

_DASH = "–"


def format_report_markdown(
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str,
    context: str = "",
    images: Sequence[tuple[str, str | os.PathLike[str]]] = (),
) -> str:
    """A markdown report: title, ``context`` (free text: commands, machine, data), then per protocol (held-out
    set) a table of mean organ DSC and NSD (methods x budgets) and per-organ DSC at the smallest and largest
    budget, a table of how the runs trained, then ``images`` as ``![caption](relative/path)``.

    Honesty rules: every table says what its numbers average over; a ``±`` (std over seeds) appears only with
    several seeds; bold marks a unique best only (no bold for ties). Conclusions belong in ``context``.
    """
    results = aggregate(rows)
    if not results:
        raise ValueError("no result rows to report")
    lines = [f"# {title}", ""]
    if context.strip():
        lines += [context.strip(), ""]
    protocols = list(dict.fromkeys(r.protocol for r in results))
    for protocol in protocols:
        mine = [r for r in results if r.protocol == protocol]
        lines += _protocol_section(protocol, mine, several=len(protocols) > 1)
    for protocol in protocols:
        lines += _errors_section(
            protocol, [r for r in rows if r.get("protocol") == protocol], several=len(protocols) > 1
        )
    lines += _training_section(rows)
    if images:
        lines += ["", "## Figures"]
        for caption, path in images:
            target = Path(path).as_posix()
            lines += ["", f"![{caption}]({f'<{target}>' if ' ' in target else target})"]
    return "\n".join(lines) + "\n"


def _protocol_section(protocol: str, results: list[BudgetResult], *, several: bool) -> list[str]:
    budgets = budget_slices(results)
    labels = {r.method: r.method_label for r in results}
    cell = {(r.method, r.budget): r for r in results}
    seeds = {r.n_seeds for r in results}
    spread = max(seeds) > 1
    name = f"{protocol.capitalize()}: m" if several else "M"
    lines = [
        f"## {name}ean organ DSC and NSD",
        "",
        (f"Mean ± std over {_count(seeds, 'seed')}" if spread else f"Values from {_count(seeds, 'seed')}")
        + f" of the per-seed mean over {_count({r.n_cases for r in results}, 'evaluated case')} of each case's "
        + _averaged_text(results)
        + " (nan skipped)."
        + (" Cells give their seed count." if len(seeds) > 1 else ""),
        "",
        _table_row(["Method", *(f"{b} ({_slices_text(n)})" for b, n in budgets.items())]),
        _table_row(["---"] * (len(budgets) + 1)),
    ]
    for method, label in labels.items():
        found = [cell.get((method, budget)) for budget in budgets]
        lines.append(_table_row([_escape(label), *(_main_cell(r, spread, len(seeds) > 1) for r in found)]))
    picks = dict.fromkeys([next(iter(budgets)), next(reversed(budgets))])
    for budget, which in zip(picks, ("smallest", "largest") if len(picks) > 1 else ("only",)):
        lines += [
            "",
            f"### {protocol.capitalize() + ': p' if several else 'P'}er-organ DSC at the {which} budget: "
            f"{budget} ({_slices_text(budgets[budget])})",
            "",
            f"Mean over {_count(seeds, 'seed')} of the per-seed mean over the evaluated cases; bold: the unique "
            f"best of a row (an organ absent from every evaluated scan scores 1.0 for everyone and is shown "
            f"but never bold).",
            "",
        ]
        lines += _organ_table([cell.get((method, budget)) for method in labels], list(labels.values()))
    return lines + [""]


def _errors_section(protocol: str, rows: Sequence[Mapping[str, Any]], *, several: bool) -> list[str]:
    """At the smallest budget: predicted/true volume per organ (mean over seeds and cases) and, per method, a
    confusion table of its first seed (voxels summed over the protocol's cases). Rows without the columns
    (files written before they existed) give no section."""
    rows = [r for r in rows if isinstance(r.get("confusion"), str) and r["confusion"]]
    if not rows:
        return []
    budget = min(
        {str(r["budget"]) for r in rows},
        key=lambda b: min(int(r["n_train_slices"]) for r in rows if str(r["budget"]) == b),
    )
    rows = [r for r in rows if str(r["budget"]) == budget]
    labels = dict.fromkeys(str(r["method_label"]) for r in rows)
    organs = [o for o in FLARE_ORGANS if any(not math.isnan(float(r.get(f"{o}_VolRatio", math.nan))) for r in rows)]
    head = f"{protocol.capitalize()}: e" if several else "E"
    lines = [
        f"## {head}rrors at budget {budget}: organ volumes and confusions",
        "",
        "Predicted / true volume per organ (1.00 = right size; mean over seeds and scored cases; organs "
        "present in the ground truth). Over-segmentation shows as > 1, a missed organ as 0.",
        "",
        _table_row(["Organ", *map(_escape, labels)]),
        _table_row(["---"] * (len(labels) + 1)),
    ]
    for organ in organs:
        cells = []
        for label in labels:
            values = [
                float(r[f"{organ}_VolRatio"])
                for r in rows
                if r["method_label"] == label and not math.isnan(float(r.get(f"{organ}_VolRatio", math.nan)))
            ]
            cells.append(f"{sum(values) / len(values):.2f}" if values else _DASH)
        lines.append(_table_row([FLARE_LABELS[FLARE_ORGANS.index(organ) + 1].capitalize(), *cells]))
    for label in labels:
        mine = [r for r in rows if r["method_label"] == label]
        seed = min(int(r["seed"]) for r in mine)
        counts = summed_confusion([np.asarray(json.loads(r["confusion"])) for r in mine if int(r["seed"]) == seed])
        cases = ", ".join(sorted({str(r["case"]) for r in mine if int(r["seed"]) == seed}))
        lines += [
            "",
            format_confusion_markdown(
                counts,
                title=f"**{_escape(label)}**, seed {seed} ({cases}): where each true organ's voxels were predicted",
            ).rstrip(),
        ]
    return lines + [""]


def _training_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """How the runs trained: mean optimizer steps and in how many runs the loss had flattened."""
    runs: dict[tuple[str, str], dict[int, Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("steps") not in (None, ""):
            runs.setdefault((str(row["method_label"]), str(row["budget"])), {})[int(row["seed"])] = row
    if not runs:
        return []
    lines = [
        "## Training runs",
        "",
        "Per method and budget, over its seeds: optimizer steps (mean) and the runs whose training loss had "
        "flattened by the end (mean loss of the last 10% of the run within 5% of the 10% before).",
        "",
        _table_row(["Method", "Budget", "Steps", "Loss flattened"]),
        _table_row(["---"] * 4),
    ]
    for (label, budget), by_seed in runs.items():
        flat = [r.get("flattened") for r in by_seed.values()]
        known = [f for f in flat if f in ("true", "false", True, False)]
        flat_text = f"{sum(f in ('true', True) for f in known)} of {len(known)}" if known else _DASH
        steps = sum(float(r["steps"]) for r in by_seed.values()) / len(by_seed)
        lines.append(_table_row([_escape(label), budget, f"{steps:g}", flat_text]))
    return lines + [""]


def _organ_table(results: list[BudgetResult | None], labels: list[str]) -> list[str]:
    """Rows = organs + the 13-organ mean, columns = methods; a unique best value of a row in bold."""
    lines = [
        _table_row(["Organ", *map(_escape, labels)]),
        _table_row(["---"] * (len(labels) + 1)),
    ]
    rows = [
        (FLARE_LABELS[label].capitalize(), [r.organ_dsc[organ] if r else math.nan for r in results])
        for label, organ in enumerate(FLARE_ORGANS, start=1)
    ]
    found = [r for r in results if r]
    if found and all(r.averaged_over == "present organs" for r in found):
        rows.append((f"**{MEAN_PRESENT}**", [r.dsc_mean if r else math.nan for r in results]))
        rows.append((MEAN_FLARE, [r.flare_dsc_mean if r else math.nan for r in results]))
    else:
        rows.append(("**Mean**", [r.dsc_mean if r else math.nan for r in results]))
    for name, values in rows:
        rounded = [round(v, 3) for v in values]
        scored = [v for v in rounded if not math.isnan(v)]
        best = max(scored) if len(scored) > 1 and scored.count(max(scored)) == 1 else None
        lines.append(_table_row([name, *(f"**{_num(v)}**" if v == best else _num(v) for v in rounded)]))
    return lines


def _averaged_text(results: Sequence[BudgetResult]) -> str:
    if all(r.averaged_over == "present organs" for r in results):
        return (
            f"{MEAN_PRESENT.lower()} (an absent organ has no DSC to average; the "
            f"{MEAN_FLARE}, which scores an absent organ 1 or 0, is in the per-organ tables and results.csv)"
        )
    return f"mean over the {len(FLARE_ORGANS)} FLARE 2022 organs"


def _main_cell(result: BudgetResult | None, spread: bool, show_seeds: bool) -> str:
    if result is None:
        return _DASH
    if spread and result.n_seeds > 1:
        text = (
            f"DSC {_num(result.dsc_mean)} ± {_num(result.dsc_std)} / "
            f"NSD {_num(result.nsd_mean)} ± {_num(result.nsd_std)}"
        )
    else:
        text = f"DSC {_num(result.dsc_mean)} / NSD {_num(result.nsd_mean)}"
    return f"{text} ({_count({result.n_seeds}, 'seed')})" if show_seeds else text


def _num(value: float) -> str:
    return _DASH if math.isnan(value) else f"{value:.3f}"


def _slices_text(n: int | float) -> str:
    return f"{n:g} slice" + ("" if n == 1 else "s")


def _count(values: set[int], noun: str) -> str:
    """``{3} -> "3 seeds"``, ``{1} -> "1 seed"``, ``{2, 3} -> "2–3 seeds"``."""
    low, high = min(values), max(values)
    return (f"{low}" if low == high else f"{low}{_DASH}{high}") + f" {noun}" + ("" if high == 1 else "s")


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _table_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def write_report(
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    title: str,
    context: str = "",
    overlays: Sequence[tuple[str, str | os.PathLike[str]]] = (),
) -> Path:
    """Write ``results.csv``, ``dsc_vs_budget.png`` and (last) ``summary.md`` into ``out_dir``.

    ``overlays``: ``(caption, path)`` of already rendered images (e.g. :func:`render_overlays`), linked from
    the summary relative to ``out_dir``. Returns the path of ``summary.md``.
    """
    if not rows:
        raise ValueError("no result rows to report")
    out = Path(out_dir)
    write_results_csv(rows, out / "results.csv")
    plot = plot_dsc_vs_budget(rows, out / "dsc_vs_budget.png")
    images = [("Mean organ DSC vs label budget", plot.name)]
    images += [(caption, os.path.relpath(image, out)) for caption, image in overlays]
    summary = out / "summary.md"
    atomic_write_text(summary, format_report_markdown(rows, title=title, context=context, images=images))
    return summary
