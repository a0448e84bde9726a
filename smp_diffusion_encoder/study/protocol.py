"""The few-shot protocol: methods x label budgets x seeds, each trained, then scored on held-out data.

Held-out data (:func:`holdout`), chosen once per study and never trained or validated on:

* **several labeled cases**: ``test_cases`` whole cases (seeded choice) are held out; budgets are drawn
  from the other cases, as in the paper's FLARE 2022 protocol;
* **one labeled case** (the realct benchmark): its slices are cut into alternating z blocks
  (:func:`~smp_diffusion_encoder.data.splits.heldout_split`: ``block`` train slices, ``gap`` dropped, ``block``
  evaluation slices, ``gap`` dropped, ...), so no training or validation slice is within ``gap`` slices of
  an evaluated one. Budgets and validation slices come from the train blocks only.

Scoring: the held-out slices of every evaluation case are predicted
(:func:`~smp_diffusion_encoder.inference.predict_volume` on exactly those slices), both label maps are
zeroed outside them, put back into the file's voxel order and scored with
:func:`~smp_diffusion_encoder.evaluation.case_metrics` (3D DSC and NSD with FLARE 2022's rules and the
file's spacing). A whole held-out case is therefore scored exactly as the official evaluator scores it.

Every finished (method, budget, seed) appends its rows to ``out_dir/results.csv``; a study started again
with the same ``out_dir`` skips what is there (an interrupted study resumes). Run folders keep their
``split.json``, ``metrics.csv`` and ``loss.png``; weights and checkpoints are deleted after scoring unless
``keep_models``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smp_diffusion_encoder.data.flare import Case
from smp_diffusion_encoder.data.remap import FLARE_ORGANS
from smp_diffusion_encoder.data.splits import eligible_slices, heldout_split, read_split_json
from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.evaluation import case_metrics
from smp_diffusion_encoder.finetune import finetune
from smp_diffusion_encoder.finetune.data import labeled_cases
from smp_diffusion_encoder.inference import load_model, predict_volume
from smp_diffusion_encoder.study.results import read_results_csv, write_results_csv


@dataclass(frozen=True)
class Method:
    """A way to train a segmenter: ``options`` are :func:`~smp_diffusion_encoder.finetune.finetune` arguments."""

    name: str
    label: str
    options: Mapping[str, Any]


def standard_methods(encoder: str = "ddpm-ct", weights: str | None = "ct", *, steps: int = 300,
                     unfreeze_at: int | None = None, mlp_members: int = 10) -> dict[str, Method]:
    """The benchmark's methods, by name.

    * ``ddpm-probe``, ``ddpm-mlp``, ``ddpm-unet``: the pretrained encoder, frozen, with the paper's linear
      probe, Baranchuk's MLP ensemble, an smp Unet decoder;
    * ``ddpm-unet-ft``: the same decoder, then the encoder unfreezes at ``unfreeze_at`` (default half the
      steps) at a tenth of the learning rate;
    * ``random-unet``, ``random-probe``: ``ddpm-unet`` and ``ddpm-probe`` with random encoder weights (does
      pretraining matter? a decoder can learn around poor features, a linear probe cannot);
    * ``resnet34-scratch``: ``smp.Unet("resnet34")`` trained end to end from random weights (the standard
      supervised baseline; same image size, loss, steps and learning rate as the decoders).
    """
    half = steps // 2 if unfreeze_at is None else unfreeze_at
    base = {"encoder": encoder, "encoder_weights": weights, "steps": steps}
    return {m.name: m for m in (
        Method("ddpm-probe", f"{encoder} + linear probe", {**base, "method": "probe"}),
        Method("ddpm-mlp", f"{encoder} + MLP ensemble", {**base, "method": "mlp", "mlp_members": mlp_members}),
        Method("ddpm-unet", f"{encoder} + Unet decoder (frozen)", {**base, "method": "unet"}),
        Method("ddpm-unet-ft", f"{encoder} + Unet decoder, encoder tuned", {**base, "method": "unet",
                                                                            "unfreeze_at": half}),
        Method("random-unet", f"{encoder} random weights + Unet decoder", {**base, "method": "unet",
                                                                           "encoder_weights": None}),
        Method("random-probe", f"{encoder} random weights + linear probe", {**base, "method": "probe",
                                                                            "encoder_weights": None}),
        Method("resnet34-scratch", "smp Unet resnet34 from scratch", {
            "method": "unet", "encoder": "resnet34", "encoder_weights": None, "steps": steps, "unfreeze_at": 0,
            "encoder_lr_scale": 1.0}),
    )}


@dataclass(frozen=True)
class Holdout:
    """What a study trains on and what it scores.

    Attributes:
        train_cases: labeled cases budgets are drawn from.
        pool: ``{case_id: z}`` slices of ``train_cases`` that may train or validate.
        evaluation: ``[(case, z indices)]`` scored slices per held-out case (canonical z).
        description: one line for reports.
    """

    train_cases: tuple[Case, ...]
    pool: Mapping[str, Sequence[int]]
    evaluation: tuple[tuple[Case, tuple[int, ...]], ...]
    description: str
    params: Mapping[str, Any] = field(default_factory=dict)


def holdout(root_or_cases: str | os.PathLike[str] | Sequence[Case], *, test_cases: int = 10, block: int = 8,
            gap: int = 2, seed: int = 0) -> Holdout:
    """Held-out cases (several labeled cases) or z blocks (one labeled case); see the module docstring."""
    cases = labeled_cases(root_or_cases)
    if len(cases) == 1:
        (case,) = cases
        labels = read_volume(case.label, kind="label").array  # type: ignore[arg-type]
        split = heldout_split(case.case_id, eligible_slices(labels), block=block, gap=gap, seed=seed)
        pool = split.by_case("train")
        evaluation = ((case, tuple(split.by_case("evaluation")[case.case_id])),)
        text = (f"one labeled case ({case.case_id}): alternating z blocks of {block} train / {block} evaluation "
                f"slices with {gap} slices dropped between them (phase seed {seed}); {len(split.train)} train-side "
                f"and {len(split.evaluation)} evaluated slices")
        return Holdout((case,), pool, evaluation, text, {"block": block, "gap": gap, "seed": seed})
    if not 1 <= test_cases < len(cases):
        raise ConfigError(f"test_cases must be in [1, {len(cases) - 1}] for {len(cases)} labeled cases, got {test_cases}")
    order = np.random.default_rng(seed).permutation(len(cases))
    test = sorted((cases[i] for i in order[:test_cases]), key=lambda c: c.case_id)
    train = tuple(sorted((cases[i] for i in order[test_cases:]), key=lambda c: c.case_id))
    evaluation = []
    for case in test:
        z = read_volume(case.label, kind="label").array.shape[0]  # type: ignore[arg-type]
        evaluation.append((case, tuple(range(z))))
    text = (f"{len(cases)} labeled cases: {len(test)} held out whole (seed {seed}), budgets drawn from the other "
            f"{len(train)}")
    return Holdout(train, {}, tuple(evaluation), text, {"test_cases": test_cases, "seed": seed})


Observer = Callable[[Method, str, int, Case, np.ndarray, np.ndarray, tuple[int, ...]], None]


def run_study(
    root_or_cases: str | os.PathLike[str] | Sequence[Case] | Holdout,
    out_dir: str | os.PathLike[str],
    *,
    methods: Sequence[Method],
    budgets: Sequence[str] = ("4", "1%", "10%", "all"),
    seeds: Sequence[int] = (0, 1, 2),
    image_size: int | None = None,
    device: str = "cpu",
    keep_models: bool = False,
    progress: bool = True,
    observe: Observer | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train and score every (budget, seed, method); returns all rows (also in ``out_dir/results.csv``).

    Args:
        root_or_cases: a FLARE-layout root or labeled cases (held out with :func:`holdout` defaults), or a
            :class:`Holdout`.
        image_size: model input size for every method (default: each encoder's own; give one size so
            that baselines see the same pixels).
        observe: called after scoring with ``(method, budget, seed, case, gt, pred, z)`` (canonical label
            maps of the scored slices): used for overlays.
    """
    plan = root_or_cases if isinstance(root_or_cases, Holdout) else holdout(root_or_cases)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    rows = read_results_csv(csv_path) if csv_path.is_file() else []
    done = {(r["method"], r["budget"], r["seed"]) for r in rows}
    total = len(budgets) * len(seeds) * len(methods)
    for i, (budget, seed, method) in enumerate(((b, s, m) for b in budgets for s in seeds for m in methods), 1):
        if (method.name, budget, seed) in done:
            continue
        log(f"[{i}/{total}] {method.label}: budget {budget}, seed {seed}")
        run_dir = out / "runs" / method.name / _safe(budget) / f"seed{seed}"
        if run_dir.exists():  # an interrupted run: start it again (results are only kept when complete)
            shutil.rmtree(run_dir)
        tick = time.perf_counter()
        model_dir = finetune(plan.train_cases, out_dir=run_dir, budget=budget, pool=plan.pool or None, seed=seed,
                             image_size=image_size, device=device, progress=progress, **method.options)
        seconds = time.perf_counter() - tick
        n_train = len(read_split_json(run_dir / "split.json").train)
        model = load_model(model_dir)
        for case, zs in plan.evaluation:
            metrics, gt, pred = score_slices(model, case, zs, device=device)
            rows.append(_row(method, budget, n_train, seed, case.case_id, metrics, seconds))
            if observe is not None:
                observe(method, budget, seed, case, gt, pred, zs)
        write_results_csv(rows, csv_path)
        if not keep_models:
            shutil.rmtree(model_dir)
            (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    return rows


def score_slices(model: Any, case: Case, zs: Sequence[int], *, device: str = "cpu"
                 ) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """FLARE metrics of ``model`` on slices ``zs`` of ``case`` (see the module docstring).

    Returns ``(metrics, gt, pred)``, the label maps being the canonical ``(len(zs), Y, X)`` scored slices.
    """
    image = read_volume(case.image)
    label = read_volume(case.label, kind="label")  # type: ignore[arg-type]
    index = np.asarray(zs, dtype=np.int64)
    pred_slices = predict_volume(model, dataclasses.replace(image, array=image.array[index]), device=device).labels
    gt_full = np.zeros_like(label.array)
    pred_full = np.zeros_like(label.array)
    gt_full[index] = label.array[index]
    pred_full[index] = pred_slices
    spacing = tuple(float(s) for s in label.header.get_zooms()[:3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        metrics = case_metrics(label.to_original(gt_full), label.to_original(pred_full), spacing)
    return metrics, label.array[index], pred_slices


def _row(method: Method, budget: str, n_train: int, seed: int, case: str, metrics: Mapping[str, float],
         seconds: float) -> dict[str, Any]:
    dsc = [metrics[f"{o}_DSC"] for o in FLARE_ORGANS]
    nsd = [metrics[f"{o}_NSD"] for o in FLARE_ORGANS]
    return {"method": method.name, "method_label": method.label, "budget": budget, "n_train_slices": n_train,
            "seed": seed, "case": case, "mean_DSC": _nanmean(dsc), "mean_NSD": _nanmean(nsd),
            "train_seconds": round(seconds, 1), **metrics}


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _safe(budget: str) -> str:
    return budget.replace("%", "pct").replace(" ", "")
