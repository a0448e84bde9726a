"""Few-shot benchmark: the paper's protocol on any FLARE-layout root, plus other scans scored whole.

Label budgets x methods x seeds, each trained once with :func:`smp_diffusion_encoder.finetune.finetune` (the
schedule rule) and scored on every held-out set with the FLARE 2022 metrics
(:mod:`smp_diffusion_encoder.study.protocol`):

* several labeled cases (FLARE 2022: 50): ``--test-cases`` whole cases are held out, budgets come from
  the others;
* one labeled case (realct): alternating z blocks (``--block`` train / ``--block`` evaluated slices with
  ``--gap`` slices dropped between), budgets from the train blocks only (within-volume);
* ``--test PATH``: other labeled scans (a FLARE root, or case folders with a DICOM series or image.nii.gz and
  label.nii.gz), segmented as ``smp-diffusion predict`` does and scored whole (cross-patient).

Methods (``--methods``, default all): ``ddpm-probe``, ``ddpm-mlp`` (class-balanced pixels),
``ddpm-mlp-uniform`` (Baranchuk's uniform pixels), ``ddpm-unet``, ``ddpm-unet-ft``
(pretrained ``--encoder`` with ``--weights``), ``random-unet`` and ``random-probe`` (same encoder, random
weights) and ``resnet34-scratch`` (``smp.Unet("resnet34")`` trained from scratch).

Writes ``OUT/results.csv`` (one row per method, budget, seed and scored case), ``OUT/summary.md`` (per protocol:
mean ± std over seeds of DSC and NSD per budget, per-organ DSC; how the runs trained), ``OUT/dsc_vs_budget.png``;
interrupted runs resume.

    python benchmarks/fewshot.py ../shared/data/realct --test ../shared/data/realct_extra/crosspatient \\
        --budgets 4 8 16 all --out benchmarks/results/fewshot_realct
    python benchmarks/fewshot.py /data/FLARE22 --test-cases 10 --device cuda --out runs/fewshot_flare
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import smp_diffusion_encoder  # noqa: F401  (registers the encoders)
from benchmarks._machine import describe_machine, today
from smp_diffusion_encoder.cli._args import add_config_arguments, given
from smp_diffusion_encoder.data.flare import find_labeled_cases
from smp_diffusion_encoder.errors import one_line_warning
from smp_diffusion_encoder.finetune.config import FinetuneConfig
from smp_diffusion_encoder.inference.postprocess import PostprocessingConfig
from smp_diffusion_encoder.study.config import STANDARD_METHODS, StudyConfig
from smp_diffusion_encoder.study.protocol import Method, holdout, run_study, standard_methods
from smp_diffusion_encoder.study.report import write_report
from smp_diffusion_encoder.study.results import aggregate, read_results_csv


def parse_postprocessing(name: str) -> PostprocessingConfig:
    """``"none"``, ``"lcc"``, ``"z3"`` (mm), ``"lcc+z3"`` -> :class:`PostprocessingConfig`."""
    largest, z_mm = False, 0.0
    for part in name.split("+"):
        if part == "none":
            continue
        if part == "lcc":
            largest = True
        elif part.startswith("z") and part[1:].replace(".", "", 1).isdigit():
            z_mm = float(part[1:])
        else:
            raise SystemExit(f"--postprocessing: unknown variant part {part!r} in {name!r} (lcc, zN, joined by +)")
    return PostprocessingConfig(largest_component=largest, z_context_mm=z_mm)


def with_overrides(method: Method, overrides: list[str]) -> Method:
    """``method`` with FinetuneConfig fields set from ``FIELD=VALUE`` strings (JSON values, else text)."""
    if not overrides:
        return method
    options = dict(method.options)
    for item in overrides:
        field, sep, text = item.partition("=")
        if not sep or field not in {f.name for f in dataclasses.fields(FinetuneConfig)}:
            raise SystemExit(f"--override: {item!r} is not FIELD=VALUE with a FinetuneConfig field")
        try:
            options[field] = json.loads(text)
        except json.JSONDecodeError:
            options[field] = text
    tag = " ".join(overrides)
    return Method(f"{method.name}[{tag}]", f"{method.label} [{tag}]", options)


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = one_line_warning
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="FLARE-layout root with labeled cases")
    p.add_argument("--out", type=Path, required=True, help="output folder (resumable)")
    p.add_argument(
        "--test",
        type=Path,
        nargs="*",
        default=[],
        metavar="PATH",
        help="other labeled scans scored whole (FLARE roots or case folders)",
    )
    add_config_arguments(p, StudyConfig)
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(STANDARD_METHODS),
        choices=STANDARD_METHODS,
        metavar="METHOD",
        help="method names (default: all)",
    )
    p.add_argument("--encoder", default="ddpm-ct")
    p.add_argument("--weights", default="ct", help="pretrained weights key of --encoder (default ct)")
    p.add_argument("--mlp-members", type=int, default=10)
    p.add_argument("--unfreeze-at", type=int, default=250, help="ddpm-unet-ft: step the encoder unfreezes")
    p.add_argument(
        "--postprocessing",
        nargs="+",
        default=[],
        metavar="VARIANT",
        help="also score every model with these post-processing variants (no retraining): none, lcc (largest "
        "3D component per organ), zN (probabilities averaged with the slices N mm above and below), "
        "or both joined by +, e.g. lcc z3 lcc+z3",
    )
    p.add_argument(
        "--override",
        nargs="+",
        default=[],
        metavar="FIELD=VALUE",
        help="FinetuneConfig fields set for every method (an ablation of one setting), e.g. steps_scale=2 "
        "augment_views=64; the methods are renamed '<method>[FIELD=VALUE ...]'",
    )
    p.add_argument(
        "--include",
        nargs="+",
        type=Path,
        default=[],
        metavar="DIR",
        help="also report the rows of these studies' results.csv (e.g. methods run in parallel)",
    )
    p.add_argument("--report-only", action="store_true", help="train nothing: report OUT's and --include rows")
    p.add_argument("--note", default="", help="text added to the report's context (e.g. how the rows were made)")
    args = p.parse_args(argv)

    start = time.perf_counter()
    config = StudyConfig(**given(args, StudyConfig))
    catalog = standard_methods(args.encoder, args.weights, mlp_members=args.mlp_members, unfreeze_at=args.unfreeze_at)
    tests = [case for path in args.test for case in find_labeled_cases(path)]
    plan = holdout(args.root, config, tests=tests)
    print(f"held-out data: {plan.description}")
    if args.report_only:
        csv_path = args.out / "results.csv"
        rows = read_results_csv(csv_path) if csv_path.is_file() else []
    else:
        variants = {name: parse_postprocessing(name) for name in args.postprocessing}
        methods = [with_overrides(catalog[n], args.override) for n in args.methods]
        rows = run_study(plan, args.out, methods, config, progress=False, postprocessing=variants)
    for folder in args.include:
        rows += read_results_csv(folder / "results.csv")
    elapsed = time.perf_counter() - start
    given_argv = list(argv if argv is not None else sys.argv[1:])
    if "--note" in given_argv:  # the note is printed once, after the command
        del given_argv[given_argv.index("--note") : given_argv.index("--note") + 2]
    command = " ".join(["python benchmarks/fewshot.py", *given_argv])
    what = (
        ("rows merged from " + ", ".join(f"`{d}`" for d in [args.out, *args.include]))
        if args.report_only
        else (
            f"schedule rule of smp_diffusion_encoder.finetune.schedule, image size "
            f"{config.image_size or 'of the encoder'}, seeds {list(config.seeds)}; this invocation took "
            f"{elapsed / 60:.1f} min (runs already in results.csv are reused)"
        )
    )
    context = (
        f"Data: `{args.root}`; {plan.description}. Encoder `{args.encoder}` with weights `{args.weights}` "
        f"(pretrained methods). Machine: {describe_machine(config.device)}; {today()}; {what}. "
        f"Command: `{command}`. {args.note}"
    )
    summary = write_report(rows, args.out, title="Few-shot organ segmentation (FLARE 2022 metrics)", context=context)
    for r in aggregate(rows):
        print(
            f"{r.protocol:>15s} {r.method:18s} {r.budget:>5s} ({r.n_train_slices} slices): DSC {r.dsc_mean:.3f} "
            f"+- {r.dsc_std:.3f}  NSD {r.nsd_mean:.3f} +- {r.nsd_std:.3f}  ({r.n_seeds} seeds)"
        )
    print(f"report -> {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
