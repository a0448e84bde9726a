"""``smp-diffusion demo``: the method on real CT, offline, on a CPU, ending in a readable report.

What a user does: label a few slices of one scan, then segment other patients' scans, which are rarely like
the labeled one. Here:

1. Few-shot fine-tune on labeled slices of a **non-contrast** real scan (``demo_data/train/REALCT_Tr_0001``,
   shipped in the package): the ``ddpm-ct`` encoder with its default pretrained weights, frozen, with an smp
   Unet decoder, from 4 labeled slices (``--budgets`` for more), with two recipes: the default (augmented views
   with simulated contrast phases and nnU-Net's spatial and intensity set, 3D post-processing, see
   :mod:`smp_diffusion_encoder.finetune`) and release 0.2's (no augmentation, no post-processing).
2. Segment a **contrast-enhanced** scan of another acquisition, scanner and field of view
   (``demo_data/test/REALCT_Ts_0001``, a DICOM series) exactly as ``smp-diffusion predict`` does, and score it
   with the FLARE 2022 metrics against its pseudo ground truth (a public model's output).
3. Write ``report/summary.md`` (per-budget and per-organ tables, predicted/true volume per organ and where each
   organ's voxels went), ``report/dsc_vs_budget.png`` and ``report/overlays.png`` (slices spread over the other
   scan: image, pseudo ground truth, each recipe's prediction).

The labeled scan is used whole for training (the benchmark, ``benchmarks/fewshot.py``, also holds out z blocks of
it for validation); the demo chooses nothing, it only reports. Everything is seeded and offline; the median HU
of the organs in both scans is measured and printed, so the contrast difference is shown, not asserted.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smp_diffusion_encoder._device import describe_machine
from smp_diffusion_encoder.data.flare import Case, find_labeled_cases
from smp_diffusion_encoder.data.remap import FLARE_LABELS
from smp_diffusion_encoder.data.volume import check_pair, read_volume
from smp_diffusion_encoder.evaluation.flare import MEAN_FLARE, MEAN_PRESENT
from smp_diffusion_encoder.registry.weights import resolve_weights
from smp_diffusion_encoder.study.config import DEMO_METHODS, DEMO_STUDY, StudyConfig
from smp_diffusion_encoder.study.figures import render_overlays
from smp_diffusion_encoder.study.protocol import CROSS_PATIENT, Method, holdout, run_study, standard_methods
from smp_diffusion_encoder.study.report import write_report

DEMO_DATA = Path(__file__).resolve().parent.parent / "demo_data"
#: What the demo calls its methods (the benchmark's names are kept in results.csv).
DEMO_LABELS = {
    "ddpm-unet": "default recipe (contrast phases + nnU-Net augmentation, 3D post-processing)",
    "ddpm-unet-noaug": "release 0.2 recipe (no augmentation, no post-processing)",
}
#: Organs whose median HU the report shows for both scans (the contrast phase shows in them).
HU_ORGANS = (1, 3, 2, 13, 5)
REFERENCE = "pseudo ground truth (TotalSegmentator)"


def run_demo(
    out_dir: str | os.PathLike[str] = "demo_output",
    config: StudyConfig = DEMO_STUDY,
    *,
    methods: tuple[str, ...] = DEMO_METHODS,
    data: str | os.PathLike[str] = DEMO_DATA,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Run the demo into ``out_dir``; returns the report's ``summary.md``. Running it again resumes."""
    start = time.perf_counter()
    out = Path(out_dir)
    train = find_labeled_cases(Path(data) / "train")
    tests = find_labeled_cases(Path(data) / "test")
    plan = holdout(train, config, tests=tests, within_volume=False)
    weights = resolve_weights("ddpm-ct", "auto")
    if weights is None:
        log("note: no default ddpm-ct weights are installed; the demo uses random encoder weights")
    catalog = standard_methods("ddpm-ct", weights)
    chosen = [dataclasses.replace(catalog[m], label=DEMO_LABELS.get(m, catalog[m].label)) for m in methods]
    hu_train, hu_test = organ_hu(train[0]), organ_hu(tests[0])
    log(f"labeled scan {train[0].case_id}: {_hu_text(hu_train)}; other scan {tests[0].case_id}: {_hu_text(hu_test)}")
    overlays = _OverlayCollector(tests[0], config.budgets[0], config.seeds[0])
    rows = run_study(plan, out / "study", chosen, config, observe=overlays, log=log, progress=progress)
    report = out / "report"
    images = overlays.render(report, chosen)
    elapsed = time.perf_counter() - start
    context = (
        f"**What this shows.** A model trained on a few labeled slices of one scan, segmenting another scan that "
        f"looks different, as in every hospital. The labeled scan, {train[0].case_id}, is **non-contrast** "
        f"(median HU inside its labels: {_hu_text(hu_train)}); the other scan, {tests[0].case_id}, is "
        f"**contrast-enhanced** ({_hu_text(hu_test)}), from another scanner, field of view and slice spacing, read "
        f"from its DICOM series and segmented as `smp-diffusion predict` does. Two recipes on the same slices: "
        + "; ".join(f"*{m.label}* (`{m.name}`)" for m in chosen)
        + f". Encoder: ddpm-ct, frozen, "
        f"{'the shipped default weights (`ct`)' if weights else 'random weights (no default weights installed)'}"
        f", with an smp Unet decoder. Budgets {', '.join(config.budgets)} labeled slices drawn from the whole "
        f"labeled scan, seed{'s' if len(config.seeds) > 1 else ''} {', '.join(map(str, config.seeds))}. Machine: "
        f"{describe_machine(config.device)}; this run took {elapsed / 60:.1f} min. Reproduce: `smp-diffusion demo "
        f"--out {out}`.\n\n"
        "**What the numbers mean.** The labels of both scans are the output of a public CT segmentation model "
        "(TotalSegmentator): **pseudo ground truth**, not manual annotations. A DSC here is agreement with that "
        "model on one scan with one seed, so differences under about 0.03 are noise "
        "(`benchmarks/results/recipe_transfer.md` has 3 seeds, validation data and more budgets). Headline means "
        f"are the {MEAN_PRESENT.lower()} of the other scan (7 of the 13: liver, spleen, pancreas, aorta, IVC, "
        f"right adrenal gland, stomach), the row `smp-diffusion evaluate` prints under that name; the {MEAN_FLARE} "
        "(`evaluate`'s other mean row) also counts the absent organs, 1.0 when nothing is predicted there, 0.0 "
        "otherwise. The demo chooses nothing: every setting of the "
        "default recipe was chosen on validation data of the labeled scan (README, 'How choices are made')."
    )
    summary = write_report(
        rows,
        report,
        title="smp-diffusion demo: few-shot organ segmentation of a scan unlike the labeled one",
        context=context,
        overlays=images,
    )
    log(f"report -> {summary} ({elapsed / 60:.1f} min)")
    return summary


def organ_hu(case: Case, organs: Sequence[int] = HU_ORGANS) -> dict[str, float]:
    """``{organ name: median HU}`` of the ``organs`` present in ``case``'s label map (its image on the same grid)."""
    image = read_volume(case.image)
    labels = read_volume(case.label, kind="label")  # type: ignore[arg-type]
    check_pair(image, labels)
    return {
        FLARE_LABELS[o]: float(np.median(image.array[labels.array == o])) for o in organs if (labels.array == o).any()
    }


def _hu_text(hu: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.0f} HU" for name, value in hu.items()) or "no measured organ"


class _OverlayCollector:
    """Keeps, for one cross-patient case, budget and seed, every method's prediction (for the overlay figure)."""

    def __init__(self, case: Case, budget: str, seed: int) -> None:
        self.case, self.budget, self.seed = case, budget, seed
        self.gt: np.ndarray | None = None
        self.z: tuple[int, ...] = ()
        self.predictions: dict[str, np.ndarray] = {}

    def __call__(
        self,
        method: Method,
        budget: str,
        seed: int,
        protocol: str,
        case: Case,
        gt: np.ndarray,
        pred: np.ndarray,
        zs: tuple[int, ...],
    ) -> None:
        if (protocol, case.case_id, budget, seed) == (CROSS_PATIENT, self.case.case_id, self.budget, self.seed):
            self.gt, self.z = gt, zs
            self.predictions[method.label] = pred

    def render(self, report: Path, methods: list[Method]) -> list[tuple[str, Any]]:
        caption = (
            f"{self.case.case_id} (the other, contrast-enhanced scan), budget {self.budget}: three slices "
            f"spread over the scan, predictions vs {REFERENCE}"
        )
        if self.gt is None:  # resumed after every run was done: nothing observed this time
            done = report / "overlays.png"
            return [(caption, done)] if done.is_file() else []
        picks = spread_slices(self.gt)
        image = read_volume(self.case.image).array[np.asarray(self.z)[picks]]
        preds = {m.label: self.predictions[m.label][picks] for m in methods if m.label in self.predictions}
        n = len(self.z)
        path = render_overlays(
            image,
            self.gt[picks],
            preds,
            report / "overlays.png",
            reference=REFERENCE,
            title=f"{self.case.case_id}, budget {self.budget} labeled slices, seed {self.seed}",
            row_labels=[f"slice {self.z[i] + 1} of {n}" for i in picks],
        )
        return [(caption, path)]


def spread_slices(gt: np.ndarray, count: int = 3) -> list[int]:
    """``count`` slice indices spread over the slices holding organs (at 1/6, 3/6, 5/6 of them for three),
    so the figure shows the top, middle and bottom of the scan rather than neighbours."""
    holding = np.flatnonzero(gt.reshape(len(gt), -1).any(axis=1))
    if not len(holding):
        holding = np.arange(len(gt))
    picks = [int(holding[min(len(holding) - 1, int((2 * k + 1) * len(holding) / (2 * count)))]) for k in range(count)]
    return sorted(dict.fromkeys(picks))
