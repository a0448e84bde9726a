"""The compute curve: downstream few-shot DSC of a pretraining run's milestone weights.

Every milestone the run kept (``RUN_DIR/milestones/step-N.safetensors``: its EMA weights at step N; step 0 is the
random initialization) is exported as encoder weights, registered as ``ddpm-ct-stepN`` and fine-tuned with the
linear probe and the frozen-encoder Unet decoder at ``--budget`` labeled slices of the training scan (the
schedule rule; ``--seeds``), then scored on the training scan's held-out z blocks (within-volume) and on other
scans (``--test``, cross-patient). Pretraining cost is the run's own training time to that step, summed from its
``metrics.csv`` (one thread: CPU-core hours).

Step 0 (the random initialization) is the random-weight baseline: the same architecture and head without
pretraining. Writes ``OUT/results.csv`` (rows of every study, with ``step`` and ``core_hours``), ``OUT/summary.md``
(mean ± std over seeds per milestone, method and protocol; also ``OUT/table.md`` alone, for a model card) and
``OUT/compute_curve.png`` (DSC against steps and against CPU-core hours). Resumable: finished (milestone,
method, seed) runs are reused.

    python benchmarks/compute_curve.py /work/runs/main128 ../shared/data/realct \\
        --test ../shared/data/realct_extra/crosspatient --out benchmarks/results/compute_curve
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import describe_machine, today
from benchmarks._milestones import available_milestones, milestone_encoder
from smp_diffusion_encoder._io import atomic_path, atomic_write_text
from smp_diffusion_encoder.data.flare import find_labeled_cases
from smp_diffusion_encoder.errors import one_line_warning
from smp_diffusion_encoder.study.config import StudyConfig
from smp_diffusion_encoder.study.protocol import Method, holdout, run_study, standard_methods
from smp_diffusion_encoder.study.results import aggregate, write_results_csv
from smp_diffusion_encoder.training.run_folder import hours_at, training_hours


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
        encoder = milestone_encoder(args.run, step, args.out / "weights")
        catalog = standard_methods(encoder, "ct")
        methods = [
            Method(name, catalog[name].label.replace(encoder, "ddpm-ct"), catalog[name].options)
            for name in args.methods
        ]
        print(f"milestone {step} ({hours_at(hours, step):.2f} core-hours)", flush=True)
        for row in run_study(plan, args.out / f"step-{step:07d}", methods, config, progress=False, log=print):
            rows.append({**row, "step": step, "core_hours": round(hours_at(hours, step), 3)})
    write_results_csv(rows, args.out / "results.csv")
    table = _table(rows)
    _plot(rows, args.out / "compute_curve.png")
    context = (
        f"Run `{args.run.name}`: {len(steps)} milestones ({', '.join(map(str, steps))}). Each milestone's EMA "
        f"weights fine-tuned at budget {args.budget} with seeds {args.seeds} on {plan.description}. Machine: "
        f"{describe_machine(config.device)}; {today()}; this invocation took "
        f"{(time.perf_counter() - start) / 60:.1f} min (finished runs are reused). Command: "
        f"`python benchmarks/compute_curve.py {' '.join(argv if argv is not None else sys.argv[1:])}`. "
        f"{args.note}"
    )
    what = (
        f"Mean ± std over {len(args.seeds)} seeds of the mean DSC over the organs present in each scored ground "
        f"truth (FLARE 2022 metrics), {args.budget} labeled slices; step 0 = random weights."
    )
    atomic_write_text(args.out / "table.md", f"{what}\n\n{table}\n")
    atomic_write_text(
        args.out / "summary.md",
        f"# Compute curve: downstream DSC of pretraining milestones\n\n"
        f"{context}\n\n{what}\n\n{table}\n\n![compute curve](compute_curve.png)\n",
    )
    print(table)
    return 0


def _table(rows: list[dict]) -> str:
    by_step: dict[int, list[dict]] = {}
    for row in rows:
        by_step.setdefault(row["step"], []).append(row)
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    methods = list(dict.fromkeys(r["method_label"] for r in rows))
    header = ["step", "core-hours"] + [f"{m}, {p}" for m in methods for p in protocols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for step, mine in sorted(by_step.items()):
        cells = {(r.method_label, r.protocol): r for r in aggregate(mine)}
        values = [
            f"{cells[(m, p)].dsc_mean:.3f} ± {cells[(m, p)].dsc_std:.3f}" if (m, p) in cells else "–"
            for m in methods
            for p in protocols
        ]
        lines.append(f"| {step} | {mine[0]['core_hours']:.2f} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    methods = list(dict.fromkeys(r["method_label"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained", sharey=True)
    for ax, key, label in (
        (axes[0], "step", "pretraining steps (step 0: random weights)"),
        (axes[1], "core_hours", "pretraining time (CPU-core hours)"),
    ):
        for i, method in enumerate(methods):
            for j, protocol in enumerate(protocols):
                points = {}
                for step in sorted({r["step"] for r in rows}):
                    mine = [r for r in rows if r["step"] == step]
                    for r in aggregate(mine):
                        if (r.method_label, r.protocol) == (method, protocol):
                            points[mine[0][key]] = (r.dsc_mean, r.dsc_std)
                xs = sorted(points)
                shown = [max(x, 1e-2) if key == "core_hours" else max(x, 10) for x in xs]  # log axis: 0 -> left edge
                ax.errorbar(
                    shown,
                    [points[x][0] for x in xs],
                    yerr=[points[x][1] for x in xs],
                    marker="os"[j],
                    color=f"C{i}",
                    linestyle="-" if j == 0 else "--",
                    capsize=3,
                    label=f"{method}, {protocol}" if ax is axes[0] else None,
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
