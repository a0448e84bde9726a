"""Does the fine-tuning schedule rule converge? Every head trained with the rule and twice as long.

For each method and label budget (one seed), the run of the rule's length and one of twice that length
(``FinetuneConfig.steps_scale=2``) are scored on the held-out slices of the training scan (within-volume) and
on another scan (cross-patient). If the rule converges, doubling it changes the DSC by no more than seed
noise; the report also gives whether each run's training loss had flattened.

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

from benchmarks._machine import describe_machine, today  # noqa: E402
from benchmarks._milestones import milestone_encoder  # noqa: E402
from smp_diffusion_encoder.data.flare import find_labeled_cases  # noqa: E402
from smp_diffusion_encoder.study.config import StudyConfig  # noqa: E402
from smp_diffusion_encoder.study.protocol import Method, holdout, run_study, standard_methods  # noqa: E402
from smp_diffusion_encoder.study.report import write_report  # noqa: E402
from smp_diffusion_encoder.study.results import aggregate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="FLARE-layout root with labeled cases")
    p.add_argument("--test", type=Path, nargs="*", default=[], help="other labeled scans (case folders)")
    p.add_argument("--run", type=Path, default=None, help="pretraining run whose milestone weights to use")
    p.add_argument("--milestone", type=int, default=None, help="the milestone step (with --run)")
    p.add_argument("--methods", nargs="+", default=["ddpm-unet", "ddpm-probe", "ddpm-mlp", "resnet34-scratch"])
    p.add_argument("--budgets", nargs="+", default=["4", "all"])
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
        methods.append(Method(f"{name}", f"{m.label}, rule", m.options))
        methods.append(Method(f"{name}-x2", f"{m.label}, rule x 2", {**m.options, "steps_scale": 2.0}))
    config = StudyConfig(budgets=tuple(args.budgets), seeds=(args.seed,))
    tests = [c for path in args.test for c in find_labeled_cases(path)]
    plan = holdout(args.root, config, tests=tests)
    rows = run_study(plan, args.out, methods, config, progress=False)
    elapsed = time.perf_counter() - start
    lines = ["| protocol | method | budget | DSC, rule | DSC, rule x 2 | difference |", "|---|---|---|---|---|---|"]
    results = {(r.protocol, r.method, r.budget): r for r in aggregate(rows)}
    for (protocol, method, budget), r in results.items():
        if method.endswith("-x2"):
            continue
        twice = results.get((protocol, f"{method}-x2", budget))
        if twice is not None:
            lines.append(f"| {protocol} | {method} | {budget} | {r.dsc_mean:.3f} | {twice.dsc_mean:.3f} | "
                         f"{twice.dsc_mean - r.dsc_mean:+.3f} |")
    context = (f"Data: `{args.root}`; {plan.description}. Encoder `{encoder}`. Seed {args.seed}. Machine: "
               f"{describe_machine(config.device)}; {today()}; this invocation took {elapsed / 60:.1f} min. "
               f"Command: `python benchmarks/finetune_schedule.py {' '.join(argv or sys.argv[1:])}`.\n\n"
               "## Rule vs twice the rule (mean organ DSC)\n\n" + "\n".join(lines))
    summary = write_report(rows, args.out, title="Fine-tuning schedule: the rule vs twice as long", context=context)
    print("\n".join(lines))
    print(f"report -> {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
