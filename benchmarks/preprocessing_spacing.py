"""Physical pixel spacing vs the legacy whole-field-of-view layout, measured across patients.

The first release squeezed every slice's whole field of view into the model's size, whatever its pixel spacing
(366 mm on the training scan, 500 mm on the cross-patient scan: organs 1.4x smaller in pixels there). Now slices
are resampled to a fixed spacing (3 mm at 128 px) around the body (:mod:`smp_diffusion_encoder.data.preprocessing`).

To compare the layouts without pretraining in between, both use the same **random** encoder weights (a
pretraining run's step-0 milestone; or fresh ones): the same weights folder is written twice, once with the
physical preprocessing and once with ``spacing_mm=None`` (legacy), registered as two encoders, and fine-tuned with
``--methods`` at 4 labeled slices of the training scan (``--seeds``), then scored within-volume and on the
``--test`` scans (cross-patient, DICOM in).

    python benchmarks/preprocessing_spacing.py ../shared/data/realct --test ../shared/data/realct_extra/crosspatient \\
        --run runs/main128 --out benchmarks/results/preprocessing_spacing
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
from benchmarks._milestones import milestone_encoder
from smp_diffusion_encoder.data.flare import find_labeled_cases
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.errors import one_line_warning
from smp_diffusion_encoder.hub.weights import CONFIG_NAME
from smp_diffusion_encoder.registry import register_encoder_from_folder
from smp_diffusion_encoder.study.config import StudyConfig
from smp_diffusion_encoder.study.protocol import Method, holdout, run_study, standard_methods
from smp_diffusion_encoder.study.report import write_report


def legacy_copy(folder: Path, out: Path) -> Path:
    """``folder``'s weights with the legacy preprocessing (same HU window and size, ``spacing_mm=None``)."""
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((folder / CONFIG_NAME).read_text())
    prep = PreprocessingConfig.from_dict(config["preprocessing"])
    config["preprocessing"] = PreprocessingConfig(prep.hu_window, prep.image_size, None).to_dict()
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    for name in ("model.safetensors", "README.md"):
        (out / name).write_bytes((folder / name).read_bytes())
    return out


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = one_line_warning
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="FLARE-layout root with labeled cases")
    p.add_argument("--test", type=Path, nargs="*", default=[], help="other labeled scans (case folders)")
    p.add_argument("--run", type=Path, required=True, help="pretraining run whose step-0 (random) weights to use")
    p.add_argument("--methods", nargs="+", default=["ddpm-unet", "ddpm-probe"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    start = time.perf_counter()
    physical = milestone_encoder(args.run, 0, args.out / "weights")
    folder = args.out / "weights" / "step-0000000"
    legacy = register_encoder_from_folder("ddpm-ct-step0-legacy", legacy_copy(folder, args.out / "weights" / "legacy"))
    config = StudyConfig(budgets=("4",), seeds=tuple(args.seeds))
    plan = holdout(args.root, config, tests=[c for path in args.test for c in find_labeled_cases(path)])
    methods = []
    for encoder, tag in ((legacy, "legacy: whole field of view to 128 px"), (physical, "physical: 3 mm pixels")):
        catalog = standard_methods(encoder, "ct")
        for name in args.methods:
            m = catalog[name]
            methods.append(
                Method(
                    f"{name}-{'legacy' if encoder == legacy else 'physical'}",
                    m.label.replace(encoder, "ddpm-ct (random weights)") + f", {tag}",
                    m.options,
                )
            )
    rows = run_study(plan, args.out / "study", methods, config, progress=False)
    context = (
        f"Data: `{args.root.name}`; {plan.description}. Both layouts use the same random encoder weights "
        f"(step 0 of `{args.run.name}`) and the same training; only the slice layout differs. Machine: "
        f"{describe_machine(config.device)}; {today()}; {(time.perf_counter() - start) / 60:.1f} min. Command: "
        f"`python benchmarks/preprocessing_spacing.py {' '.join(argv if argv is not None else sys.argv[1:])}`."
    )
    summary = write_report(
        rows, args.out, title="Preprocessing: physical pixel spacing vs whole field of view", context=context
    )
    print(f"report -> {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
