"""Does the fine-tuning schedule rule converge, and is it longer than it needs to be? Every head trained with
half the rule, the rule and twice the rule.

For each method and label budget (one seed), runs of the rule's length times each ``--scales`` factor
(``FinetuneConfig.steps_scale``) are scored on the held-out slices of the training scan (within-volume) and
on another scan (cross-patient). If the rule converges, doubling it changes the DSC by no more than seed
noise; if half the rule does as well, the rule could be shorter. The report also gives whether each run's
training loss had flattened.

    python benchmarks/finetune_schedule.py ../shared/data/realct --test ../shared/data/realct_extra/crosspatient \\
        --run /work/runs/main128 --milestone 500 --out benchmarks/results/finetune_schedule
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
from benchmarks._milestones import milestone_encoder
from smp_diffusion_encoder.data.flare import find_labeled_cases
from smp_diffusion_encoder.errors import one_line_warning
from smp_diffusion_encoder.study.config import StudyConfig
from smp_diffusion_encoder.study.protocol import Method, holdout, run_study, standard_methods
from smp_diffusion_encoder.study.report import write_report
from smp_diffusion_encoder.study.results import aggregate


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = one_line_warning
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="FLARE-layout root with labeled cases")
    p.add_argument("--test", type=Path, nargs="*", default=[], help="other labeled scans (case folders)")
    p.add_argument("--run", type=Path, default=None, help="pretraining run whose milestone weights to use")
    p.add_argument("--milestone", type=int, default=None, help="the milestone step (with --run)")
    p.add_argument("--methods", nargs="+", default=["ddpm-unet", "ddpm-probe", "ddpm-mlp", "resnet34-scratch"])
    p.add_argument("--budgets", nargs="+", default=["4", "all"])
    p.add_argument("--scales", nargs="+", type=float, default=[0.5, 1.0, 2.0], help="multiples of the rule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    start = time.perf_counter()
    encoder, weights = "ddpm-ct", "ct"
    if args.run is not None:
        encoder = milestone_encoder(args.run, args.milestone, args.out / "weights")
    catalog = standard_methods(encoder, weights)
    methods = []
    for name in args.methods:
        m = catalog[name]
        for scale in args.scales:
            methods.append(
                Method(
                    scaled(name, scale),
                    f"{m.label}, rule" + (f" x {scale:g}" if scale != 1 else ""),
                    {**m.options, "steps_scale": scale},
                )
            )
    config = StudyConfig(budgets=tuple(args.budgets), seeds=(args.seed,))
    tests = [c for path in args.test for c in find_labeled_cases(path)]
    plan = holdout(args.root, config, tests=tests)
    rows = run_study(plan, args.out, methods, config, progress=False)
    elapsed = time.perf_counter() - start
    head = " | ".join(f"rule x {s:g}" for s in args.scales)
    lines = [f"| protocol | method | budget | {head} | steps |", "|---|---|---|" + "---|" * (len(args.scales) + 1)]
    results = {(r.protocol, r.method, r.budget): r for r in aggregate(rows)}
    steps = {(r["method"], r["budget"]): r.get("steps", "") for r in rows}
    for protocol in dict.fromkeys(k[0] for k in results):
        for name in args.methods:
            for budget in args.budgets:
                found = [results.get((protocol, scaled(name, s), budget)) for s in args.scales]
                if any(f is None for f in found):
                    continue
                cells = " | ".join(f"{f.dsc_mean:.3f}" for f in found)
                lengths = " / ".join(str(steps.get((scaled(name, s), budget), "")) for s in args.scales)
                lines.append(f"| {protocol} | {name} | {budget} | {cells} | {lengths} |")
    context = (
        f"Data: `{args.root}`; {plan.description}. Encoder `{encoder}`. Seed {args.seed}. Machine: "
        f"{describe_machine(config.device)}; {today()}; this invocation took {elapsed / 60:.1f} min. "
        f"Command: `python benchmarks/finetune_schedule.py {' '.join(argv or sys.argv[1:])}`.\n\n"
        "## Mean organ DSC by schedule length (multiples of the rule)\n\n" + "\n".join(lines)
    )
    summary = write_report(
        rows, args.out, title="Fine-tuning schedule: half the rule, the rule, twice the rule", context=context
    )
    print("\n".join(lines))
    print(f"report -> {summary}")
    return 0


def scaled(name: str, scale: float) -> str:
    """The run name of ``name`` at ``scale`` times the rule (``ddpm-unet``, ``ddpm-unet-x2``, ``ddpm-unet-x0.5``)."""
    return name if scale == 1 else f"{name}-x{scale:g}"


if __name__ == "__main__":
    sys.exit(main())
