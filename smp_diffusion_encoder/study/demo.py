"""``smp-diffusion demo``: the method on real CT, offline, on a CPU, ending in a readable report.

1. Few-shot fine-tune on labeled slices of one real scan (``demo_data/train/REALCT_Tr_0001``, shipped in the
   package): the ``ddpm-ct`` encoder with its default pretrained weights, frozen, with an smp Unet decoder,
   against the same decoder on the same encoder with random weights (what the pretraining buys), at several
   label budgets, on the schedule rule.
2. Segment the other real scan's DICOM series (``demo_data/test/REALCT_Ts_0001``) exactly as ``smp-diffusion
   predict`` does, and the held-out z blocks of the training scan, and score both with the FLARE 2022 metrics.
3. Write ``report/summary.md`` (tables per protocol and budget, per-organ DSC, how each run trained),
   ``report/dsc_vs_budget.png`` and ``report/overlays.png`` (the other scan: image, pseudo ground truth and
   every method's prediction).

Everything is seeded and offline. The labels are a public model's output (pseudo ground truth), see
``demo_data/README.md``; the report says what the numbers mean.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from smp_diffusion_encoder._device import describe_machine
from smp_diffusion_encoder.data.flare import Case, find_labeled_cases
from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.registry.weights import resolve_weights
from smp_diffusion_encoder.study.config import DEMO_METHODS, DEMO_STUDY, StudyConfig
from smp_diffusion_encoder.study.figures import render_overlays
from smp_diffusion_encoder.study.protocol import CROSS_PATIENT, Method, holdout, run_study, standard_methods
from smp_diffusion_encoder.study.report import write_report

DEMO_DATA = Path(__file__).resolve().parent.parent / "demo_data"


def run_demo(out_dir: str | os.PathLike[str] = "demo_output", config: StudyConfig = DEMO_STUDY, *,
             methods: tuple[str, ...] = DEMO_METHODS, data: str | os.PathLike[str] = DEMO_DATA,
             progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Run the demo into ``out_dir``; returns the report's ``summary.md``. Running it again resumes."""
    start = time.perf_counter()
    out = Path(out_dir)
    train = find_labeled_cases(Path(data) / "train")
    tests = find_labeled_cases(Path(data) / "test")
    plan = holdout(train, config, tests=tests)
    weights = resolve_weights("ddpm-ct", "auto")
    if weights is None:
        log("note: no default ddpm-ct weights are installed; the demo uses random encoder weights")
    catalog = standard_methods("ddpm-ct", weights)
    chosen = [catalog[m] for m in methods]
    overlays = _OverlayCollector(tests[0], config.budgets[0], config.seeds[0])
    rows = run_study(plan, out / "study", chosen, config, observe=overlays, log=log, progress=progress)
    report = out / "report"
    images = overlays.render(report, chosen)
    elapsed = time.perf_counter() - start
    context = (
        f"Trained on labeled slices of one real CT scan ({train[0].case_id}); scored on its held-out slices "
        f"(within-volume: {plan.description}) and on another real scan's DICOM series ({tests[0].case_id}, "
        f"cross-patient: a different scanner, field of view and slice spacing), segmented as `smp-diffusion "
        f"predict` does. Encoder weights: "
        f"{'the shipped ddpm-ct default (`ct`)' if weights else 'random (no default weights installed)'}. "
        f"Budgets {', '.join(config.budgets)} labeled slices; every run trains on the schedule rule "
        f"(`smp_diffusion_encoder.finetune.schedule`), seed{'s' if len(config.seeds) > 1 else ''} "
        f"{', '.join(map(str, config.seeds))}. Machine: {describe_machine(config.device)}; this run took "
        f"{elapsed / 60:.1f} min. Reproduce: "
        f"`smp-diffusion demo --out {out}`.\n\n"
        "What the numbers mean: the labels are the output of a public CT segmentation model (TotalSegmentator), "
        "not manual annotations, so a DSC here is agreement with that model on one or two scans, with one seed "
        "(the benchmark, `benchmarks/results/fewshot_realct.md`, has 3 seeds and their spread). Headline means "
        "average the organs present in each scan's labels (the other scan holds 7 of the 13: liver, spleen, "
        "pancreas, aorta, IVC, right adrenal gland, stomach); the per-organ tables also show the absent organs "
        "with the FLARE rule (1.0 when nothing is predicted there, 0.0 otherwise). Use the numbers to compare "
        "methods and budgets, not as clinical accuracy."
    )
    summary = write_report(rows, report, title="smp-diffusion demo: few-shot organ segmentation of another CT scan",
                           context=context, overlays=images)
    log(f"report -> {summary} ({elapsed / 60:.1f} min)")
    return summary


class _OverlayCollector:
    """Keeps, for one cross-patient case, budget and seed, every method's prediction (for the overlay figure)."""

    def __init__(self, case: Case, budget: str, seed: int) -> None:
        self.case, self.budget, self.seed = case, budget, seed
        self.gt: np.ndarray | None = None
        self.z: tuple[int, ...] = ()
        self.predictions: dict[str, np.ndarray] = {}

    def __call__(self, method: Method, budget: str, seed: int, protocol: str, case: Case, gt: np.ndarray,
                 pred: np.ndarray, zs: tuple[int, ...]) -> None:
        if (protocol, case.case_id, budget, seed) == (CROSS_PATIENT, self.case.case_id, self.budget, self.seed):
            self.gt, self.z = gt, zs
            self.predictions[method.label] = pred

    def render(self, report: Path, methods: list[Method]) -> list[tuple[str, Any]]:
        caption = f"{self.case.case_id} (another scan), budget {self.budget}: predictions vs pseudo ground truth"
        if self.gt is None:  # resumed after every run was done: nothing observed this time
            done = report / "overlays.png"
            return [(caption, done)] if done.is_file() else []
        organs = [(len(np.unique(s)), i) for i, s in enumerate(self.gt)]
        picks = sorted(i for _, i in sorted(organs, reverse=True)[:3])
        image = read_volume(self.case.image).array[np.asarray(self.z)[picks]]
        preds = {m.label: self.predictions[m.label][picks] for m in methods if m.label in self.predictions}
        path = render_overlays(image, self.gt[picks], preds, report / "overlays.png",
                               title=f"{self.case.case_id}, budget {self.budget} labeled slices, seed {self.seed}",
                               row_labels=[f"z={self.z[i]}" for i in picks])
        return [(caption, path)]
