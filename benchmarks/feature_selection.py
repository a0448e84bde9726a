"""What feature selection picks on a labeled root, and what it gains on held-out data.

1. The study's held-out split is drawn first (:func:`~smp_diffusion_encoder.study.protocol.holdout`); feature
   selection (:func:`~smp_diffusion_encoder.finetune.select_features`) sees only its training side (``pool``),
   never the evaluated slices or the ``--test`` scans.
2. The selected encoder (the same weights, another ``FeatureConfig``) is registered as ``<encoder>-selected``.
3. Default and selected encoders are fine-tuned with ``--methods`` at ``--budgets`` for ``--seeds`` and scored on
   the held-out slices (within-volume or held-out cases) and on ``--test`` scans (cross-patient).

Writes ``OUT/selected/`` (the weights folder with ``selection.json``: every candidate's validation score),
``OUT/study/`` (results of both encoders) and ``OUT/summary.md``.

    python benchmarks/feature_selection.py ../shared/data/realct --test ../shared/data/realct_extra/crosspatient \\
        --out benchmarks/results/feature_selection
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import smp_diffusion_encoder  # noqa: F401  (registers the encoders)
from benchmarks._machine import describe_machine, today
from smp_diffusion_encoder.data.flare import find_labeled_cases
from smp_diffusion_encoder.errors import one_line_warning
from smp_diffusion_encoder.finetune import SelectionConfig, select_features
from smp_diffusion_encoder.registry import register_encoder_from_folder
from smp_diffusion_encoder.study.config import StudyConfig
from smp_diffusion_encoder.study.protocol import Method, holdout, run_study, standard_methods
from smp_diffusion_encoder.study.report import write_report


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = one_line_warning
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="FLARE-layout root with labeled cases")
    p.add_argument("--test", type=Path, nargs="*", default=[], help="other labeled scans (case folders)")
    p.add_argument("--encoder", default="ddpm-ct")
    p.add_argument("--weights", default="ct")
    p.add_argument("--methods", nargs="+", default=["ddpm-probe", "ddpm-unet"])
    p.add_argument("--budgets", nargs="+", default=["4"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--selection-steps", type=int, default=SelectionConfig().steps, help="probe steps per candidate")
    p.add_argument(
        "--timesteps", nargs="+", type=int, default=list(SelectionConfig().timesteps), help="candidate timesteps"
    )
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    start = time.perf_counter()
    config = StudyConfig(budgets=tuple(args.budgets), seeds=tuple(args.seeds))
    tests = [c for path in args.test for c in find_labeled_cases(path)]
    plan = holdout(args.root, config, tests=tests)
    folder = args.out / "selected"
    if not (folder / "selection.json").is_file():
        select_features(
            plan.train_cases,
            SelectionConfig(
                encoder=args.encoder,
                encoder_weights=args.weights,
                steps=args.selection_steps,
                timesteps=tuple(args.timesteps),
            ),
            out_dir=folder,
            pool=plan.pool or None,
            progress=False,
        )
    selection = json.loads((folder / "selection.json").read_text())
    selected = register_encoder_from_folder(f"{args.encoder}-selected", folder)
    methods = []
    for encoder, tag in ((args.encoder, "default features"), (selected, "selected features")):
        catalog = standard_methods(encoder, "ct" if encoder == selected else args.weights)
        for name in args.methods:
            m = catalog[name]
            methods.append(
                Method(
                    f"{name}-{'selected' if encoder == selected else 'default'}",
                    m.label.replace(encoder, args.encoder) + f", {tag}",
                    m.options,
                )
            )
    rows = run_study(plan, args.out / "study", methods, config, progress=False)
    elapsed = time.perf_counter() - start
    chosen = selection["chosen"]
    context = (
        f"Data: `{args.root.name}`; {plan.description}. Selection on the training side only (z blocks of "
        f"{SelectionConfig().block} slices alternate between fitting and scoring the candidate probes). "
        f"Selected: timesteps {chosen.get('timesteps')}, blocks {chosen.get('blocks')} (validation mean "
        f"slice DSC {selection['score']:.3f} vs {selection['baseline']:.3f} for the encoder's own selection, "
        f"{len(selection['trials'])} candidates scored, every score in `selected/selection.json`). "
        f"Machine: {describe_machine(config.device)}; {today()}; {elapsed / 60:.1f} min. Command: "
        f"`python benchmarks/feature_selection.py {' '.join(argv if argv is not None else sys.argv[1:])}`."
    )
    summary = write_report(
        rows, args.out, title="Feature selection: default vs selected timesteps and blocks", context=context
    )
    print(f"report -> {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
