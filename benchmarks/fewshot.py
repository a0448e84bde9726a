"""Few-shot benchmark: the paper's protocol on any FLARE-layout root (FLARE 2022 itself, or realct).

Label budgets x methods x seeds, each trained with :func:`smp_diffusion_encoder.finetune.finetune` and scored
on held-out data with the FLARE 2022 metrics (:mod:`smp_diffusion_encoder.study.protocol`):

* several labeled cases (FLARE 2022: 50): ``--test-cases`` whole cases are held out, budgets come from
  the others;
* one labeled case (realct): alternating z blocks (``--block`` train / ``--block`` evaluated slices with
  ``--gap`` slices dropped between), budgets and validation from the train blocks only.

Methods (``--methods``, default all): ``ddpm-probe``, ``ddpm-mlp``, ``ddpm-unet``, ``ddpm-unet-ft``
(pretrained ``--encoder`` with ``--weights``), ``random-unet`` and ``random-probe`` (same encoder, random
weights) and
``resnet34-scratch`` (``smp.Unet("resnet34")`` trained from scratch). Every method sees the same slices at the
same ``--image-size`` and trains ``--steps`` steps (early stopping on the validation slices).

Writes ``OUT/results.csv`` (one row per method, budget, seed and evaluated case), ``OUT/summary.md``
(mean +- std over seeds of DSC and NSD per budget, per-organ DSC), ``OUT/dsc_vs_budget.png``; interrupted
runs resume. Pretrained weights for realct come from ``smp-diffusion pretrain`` on its unlabeled volumes:
the shipped ``ddpm-ct`` default weights are exactly that (see their model card).

    python benchmarks/fewshot.py ../shared/data/realct --out benchmarks/results/fewshot_realct
    python benchmarks/fewshot.py /data/FLARE22 --test-cases 10 --device cuda --out runs/fewshot_flare
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import smp_diffusion_encoder  # noqa: F401,E402  (registers the encoders)
from benchmarks._machine import describe_machine, today  # noqa: E402
from smp_diffusion_encoder.study.protocol import holdout, run_study, standard_methods  # noqa: E402
from smp_diffusion_encoder.study.report import write_report  # noqa: E402
from smp_diffusion_encoder.study.results import aggregate, read_results_csv  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="FLARE-layout root with labeled cases")
    p.add_argument("--out", type=Path, required=True, help="output folder (resumable)")
    p.add_argument("--budgets", nargs="+", default=["4", "1%", "10%", "all"])
    p.add_argument("--methods", nargs="+", default=None, help="method names (default: all seven)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--encoder", default="ddpm-ct")
    p.add_argument("--weights", default="ct", help="pretrained weights key of --encoder (default ct)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--image-size", type=int, default=None, help="default: the encoder's preprocessing size")
    p.add_argument("--mlp-members", type=int, default=10)
    p.add_argument("--unfreeze-at", type=int, default=None, help="ddpm-unet-ft: step the encoder unfreezes "
                   "(default half of --steps)")
    p.add_argument("--include", nargs="+", type=Path, default=[], metavar="DIR",
                   help="also report the rows of these studies' results.csv (e.g. methods run in parallel)")
    p.add_argument("--report-only", action="store_true", help="train nothing: report OUT's and --include rows")
    p.add_argument("--note", default="", help="text added to the report's context (e.g. how the rows were made)")
    p.add_argument("--test-cases", type=int, default=10, help="held-out cases when there are several")
    p.add_argument("--block", type=int, default=8, help="z block length for a single labeled case")
    p.add_argument("--gap", type=int, default=2, help="slices dropped between train and evaluation blocks")
    p.add_argument("--device", default="cpu")
    p.add_argument("--keep-models", action="store_true")
    args = p.parse_args(argv)

    start = time.perf_counter()
    catalog = standard_methods(args.encoder, args.weights, steps=args.steps, mlp_members=args.mlp_members,
                               unfreeze_at=args.unfreeze_at)
    names = args.methods or list(catalog)
    unknown = sorted(set(names) - set(catalog))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {sorted(catalog)}")
    plan = holdout(args.root, test_cases=args.test_cases, block=args.block, gap=args.gap)
    print(f"held-out data: {plan.description}")
    if args.report_only:
        csv_path = args.out / "results.csv"
        rows = read_results_csv(csv_path) if csv_path.is_file() else []
    else:
        rows = run_study(plan, args.out, methods=[catalog[n] for n in names], budgets=args.budgets,
                         seeds=args.seeds, image_size=args.image_size, device=args.device,
                         keep_models=args.keep_models, progress=False)
    for folder in args.include:
        rows += read_results_csv(folder / "results.csv")
    elapsed = time.perf_counter() - start
    given = list(argv if argv is not None else sys.argv[1:])
    if "--note" in given:  # the note is printed once, after the command
        del given[given.index("--note"):given.index("--note") + 2]
    command = " ".join(["python benchmarks/fewshot.py", *given])
    what = ("rows merged from " + ", ".join(f"`{d}`" for d in [args.out, *args.include])) if args.report_only else (
        f"{args.steps} steps per run, image size {args.image_size or 'of the encoder'}, seeds {args.seeds}; this "
        f"invocation took {elapsed / 60:.1f} min (runs already in results.csv are reused)")
    context = (f"Data: `{args.root}`; {plan.description}. Encoder `{args.encoder}` with weights `{args.weights}` "
               f"(pretrained methods). Machine: {describe_machine(args.device)}; {today()}; {what}. "
               f"Command: `{command}`. {args.note}")
    summary = write_report(rows, args.out, title="Few-shot organ segmentation (FLARE 2022 metrics)", context=context)
    for r in aggregate(rows):
        print(f"{r.method:18s} {r.budget:>5s} ({r.n_train_slices} slices): DSC {r.dsc_mean:.3f} +- {r.dsc_std:.3f}"
              f"  NSD {r.nsd_mean:.3f} +- {r.nsd_std:.3f}  ({r.n_seeds} seeds)")
    print(f"report -> {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
