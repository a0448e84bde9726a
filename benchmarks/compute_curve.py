"""The compute curve: downstream few-shot DSC of a pretraining run's milestone weights.

Every milestone the run kept (``RUN_DIR/milestones/step-N.safetensors``: its EMA weights at step N; step 0 is the
random initialization) is exported as encoder weights, registered as ``ddpm-ct-stepN`` and fine-tuned with the
linear probe and the frozen-encoder Unet decoder at ``--budget`` labeled slices of the training scan (the
schedule rule; ``--seeds``), then scored on the training scan's held-out z blocks (within-volume) and on other
scans (``--test``, cross-patient). Pretraining cost is the run's own training time to that step, summed from its
``metrics.csv`` (one thread: CPU-core hours).

Step 0 (the random initialization) is the random-weight baseline: the same architecture and head without
pretraining. ``--reference ENCODER`` also scores that registered encoder's ``ct`` weights (e.g. ``ddpm-ct``: the
shipped default) with the same methods, seeds and data: the bar a new run's milestones must clear.

Writes ``OUT/results.csv`` (rows of every study, with ``step``, ``core_hours`` and ``weights``), ``OUT/summary.md``
(mean ± std over seeds per milestone, method and protocol; also ``OUT/table.md`` alone, for a model card) and
``OUT/compute_curve.png`` (DSC against steps and against CPU-core hours; the reference as dotted lines).
Resumable: finished (milestone, method, seed) runs are reused.

    python -m benchmarks.compute_curve /work/runs/main128 ../shared/data/realct \\
        --test ../shared/data/realct_extra/crosspatient --out benchmarks/results/compute_curve
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from benchmarks._machine import describe_machine, today
from benchmarks._milestones import available_milestones, milestone_encoder
from smp_diffusion_encoder._io import atomic_path, atomic_write_text
from smp_diffusion_encoder.data.flare import find_labeled_cases
from smp_diffusion_encoder.errors import one_line_warning
from smp_diffusion_encoder.formats.run_folder import hours_at, training_hours
from smp_diffusion_encoder.study.config import StudyConfig
from smp_diffusion_encoder.study.protocol import Method, holdout, run_study, standard_methods
from smp_diffusion_encoder.study.results import aggregate, write_results_csv


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = one_line_warning
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="pretraining run folder with milestones/")
    p.add_argument("root", type=Path, help="FLARE-layout root with the labeled training scan")
    p.add_argument("--test", type=Path, nargs="*", default=[], help="other labeled scans (case folders)")
    p.add_argument("--milestones", type=int, nargs="*", default=None, help="default: every milestone kept")
    p.add_argument("--methods", nargs="+", default=["ddpm-probe", "ddpm-unet"])
    p.add_argument("--budget", default="4")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variant", default="ddpm-ct", help="the encoder variant the run's U-Net is (default ddpm-ct)")
    p.add_argument(
        "--reference",
        default=None,
        metavar="ENCODER",
        help="also score this encoder's 'ct' weights (e.g. ddpm-ct: the shipped default) as a reference row",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--note", default="", help="text added to the summary")
    args = p.parse_args(argv)
    start = time.perf_counter()
    steps = args.milestones if args.milestones is not None else available_milestones(args.run)
    hours = training_hours(args.run)
    config = StudyConfig(budgets=(args.budget,), seeds=tuple(args.seeds))
    tests = [c for path in args.test for c in find_labeled_cases(path)]
    plan = holdout(args.root, config, tests=tests)
    rows = []
    for step in steps:
        encoder = milestone_encoder(args.run, step, args.out / "weights", args.variant)
        catalog = standard_methods(encoder, "ct")
        methods = [
            Method(name, catalog[name].label.replace(encoder, "ddpm-ct"), catalog[name].options)
            for name in args.methods
        ]
        print(f"milestone {step} ({hours_at(hours, step):.2f} core-hours)", flush=True)
        for row in run_study(plan, args.out / f"step-{step:07d}", methods, config, progress=False, log=print):
            rows.append({**row, "step": step, "core_hours": round(hours_at(hours, step), 3)})
    reference = []
    if args.reference:
        catalog = standard_methods(args.reference, "ct")
        methods = [catalog[name] for name in args.methods]
        print(f"reference: {args.reference} with its 'ct' weights", flush=True)
        for row in run_study(plan, args.out / "reference", methods, config, progress=False, log=print):
            reference.append({**row, "step": "", "core_hours": "", "weights": f"{args.reference} ct"})
    write_results_csv([{**r, "weights": f"step {r['step']}"} for r in rows] + reference, args.out / "results.csv")
    table = _table(rows, reference)
    _plot(rows, reference, args.out / "compute_curve.png")
    context = (
        f"Run `{args.run.name}`: {len(steps)} milestones ({', '.join(map(str, steps))}). Each milestone's EMA "
        f"weights fine-tuned at budget {args.budget} with seeds {args.seeds} on {plan.description}. Machine: "
        f"{describe_machine(config.device)}; {today()}; this invocation took "
        f"{(time.perf_counter() - start) / 60:.1f} min (finished runs are reused). Command: "
        f"`python -m benchmarks.compute_curve {' '.join(argv if argv is not None else sys.argv[1:])}`. "
        f"{args.note}"
    )
    what = (
        f"Mean ± std over {len(args.seeds)} seeds of the mean DSC over the organs present in each scored ground "
        f"truth (FLARE 2022 metrics), {args.budget} labeled slices; step 0 = random weights"
        + (f"; reference = {args.reference}'s 'ct' weights, same methods, seeds and data." if args.reference else ".")
    )
    atomic_write_text(args.out / "table.md", f"{what}\n\n{table}\n")
    atomic_write_text(
        args.out / "summary.md",
        f"# Compute curve: downstream DSC of pretraining milestones\n\n"
        f"{context}\n\n{what}\n\n{table}\n\n![compute curve](compute_curve.png)\n",
    )
    print(table)
    return 0


def _table(rows: list[dict], reference: list[dict]) -> str:
    by_step: dict[int, list[dict]] = {}
    for row in rows:
        by_step.setdefault(row["step"], []).append(row)
    protocols = list(dict.fromkeys(r["protocol"] for r in rows + reference))
    methods = list(dict.fromkeys(r["method_label"] for r in rows + reference))
    header = ["step", "core-hours"] + [f"{m}, {p}" for m in methods for p in protocols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def values(mine: list[dict]) -> str:
        cells = {(r.method_label, r.protocol): r for r in aggregate(mine)}
        return " | ".join(
            f"{cells[(m, p)].dsc_mean:.3f} ± {cells[(m, p)].dsc_std:.3f}" if (m, p) in cells else "–"
            for m in methods
            for p in protocols
        )

    if reference:
        lines.append(f"| reference: {reference[0]['weights']} weights | – | {values(reference)} |")
    for step, mine in sorted(by_step.items()):
        lines.append(f"| {step} | {mine[0]['core_hours']:.2f} | {values(mine)} |")
    return "\n".join(lines)


def _plot(rows: list[dict], reference: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    methods = list(dict.fromkeys(r["method_label"] for r in rows))
    # Aggregated once: {(method, protocol): [(step, core_hours, mean, std)]} and the reference's means.
    curves: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    for step in sorted({r["step"] for r in rows}):
        mine = [r for r in rows if r["step"] == step]
        for r in aggregate(mine):
            curves.setdefault((r.method_label, r.protocol), []).append(
                (step, mine[0]["core_hours"], r.dsc_mean, r.dsc_std)
            )
    reference_means = {(r.method_label, r.protocol): r.dsc_mean for r in aggregate(reference)}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained", sharey=True)
    for ax, column, label in (
        (axes[0], 0, "pretraining steps (step 0: random weights)"),
        (axes[1], 1, "pretraining time (CPU-core hours)"),
    ):
        for i, method in enumerate(methods):
            for j, protocol in enumerate(protocols):
                points = sorted(curves.get((method, protocol), []), key=lambda point: point[column])
                # log axis: 0 -> left edge
                shown = [max(point[column], 1e-2) if column else max(point[column], 10) for point in points]
                ax.errorbar(
                    shown,
                    [point[2] for point in points],
                    yerr=[point[3] for point in points],
                    marker="os"[j],
                    color=f"C{i}",
                    linestyle="-" if j == 0 else "--",
                    capsize=3,
                    label=f"{method}, {protocol}" if ax is axes[0] else None,
                )
                if (method, protocol) in reference_means:
                    ax.axhline(
                        reference_means[(method, protocol)],
                        color=f"C{i}",
                        linestyle=":",
                        linewidth=1,
                        label=f"{method}, {protocol}: {reference[0]['weights']} weights" if ax is axes[0] else None,
                    )
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean DSC, organs present (mean ± std over seeds)")
    fig.suptitle("Downstream few-shot DSC of the pretraining milestones")
    fig.legend(loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
