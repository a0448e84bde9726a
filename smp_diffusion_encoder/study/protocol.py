"""The few-shot protocol: methods x label budgets x seeds, each trained once, then scored on held-out data.

Held-out data (:func:`holdout`), chosen once per study and never trained or validated on:

* **several labeled cases** (FLARE 2022): ``test_cases`` whole cases (seeded choice) are held out; budgets are
  drawn from the other cases, as in the paper's protocol (protocol ``"held-out cases"``);
* **one labeled case** (realct): its slices are cut into alternating z blocks
  (:func:`~smp_diffusion_encoder.data.splits.heldout_split`: ``block`` train slices, ``gap`` dropped, ``block``
  evaluated slices, ``gap`` dropped, ...), so no training slice is within ``gap`` slices of an evaluated
  one; budgets come from the train blocks only (protocol ``"within-volume"``);
* **other scans** (``tests``: a FLARE root or case folders, e.g. another patient's DICOM series, see
  :func:`~smp_diffusion_encoder.data.flare.find_labeled_cases`): scored whole (protocol ``"cross-patient"``).

A partly labeled scan (a sidecar lists its labeled slices: :mod:`~smp_diffusion_encoder.data.labeled_slices`)
takes part with those slices only: its held-out blocks are cut from them, and as a held-out or other scan only
they are scored.

Every trained model is scored on all of them: one training, several evaluations. Scoring goes through the
user's path: whole scans are segmented by :func:`~smp_diffusion_encoder.inference.predict_files` (DICOM or
NIfTI in, a NIfTI label map with the input's geometry out, as ``smp-diffusion predict`` does) and scored
against their label map with the FLARE 2022 metrics (:func:`~smp_diffusion_encoder.evaluation.case_metrics`,
the official evaluator's rules and the label file's spacing), after checking that both files describe the
same grid. Within a volume, the whole volume is predicted the same way and only the evaluated slices are
scored (both maps zeroed elsewhere).

Every finished (method, budget, seed) appends its rows to ``out_dir/results.csv``; a study started again with
the same ``out_dir`` skips what is there (an interrupted study resumes). Frozen encoders' features of the labeled
slices are computed once per study (``out_dir/feature_cache``). Run folders keep their
``split.json``, ``config.json``, ``summary.json``, ``metrics.csv`` and ``loss.png``; weights and checkpoints
are deleted after scoring unless ``keep_models``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from smp_diffusion_encoder.data.flare import Case
from smp_diffusion_encoder.data.labeled_slices import labeled_or_organ_slices, read_label_map
from smp_diffusion_encoder.data.remap import FLARE_ORGANS
from smp_diffusion_encoder.data.slicer_seg import read_label_table
from smp_diffusion_encoder.data.splits import heldout_split, read_split_json
from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.evaluation.confusion import confusion_matrix, volume_ratios
from smp_diffusion_encoder.finetune.api import finetune
from smp_diffusion_encoder.finetune.config import FinetuneConfig
from smp_diffusion_encoder.finetune.data import labeled_cases
from smp_diffusion_encoder.finetune.result import FinetuneResult
from smp_diffusion_encoder.inference import load_model
from smp_diffusion_encoder.inference.postprocess import PostprocessingConfig
from smp_diffusion_encoder.registry.weights import preprocessing_for
from smp_diffusion_encoder.study.config import StudyConfig
from smp_diffusion_encoder.study.results import nan_mean, read_results_csv, write_results_csv
from smp_diffusion_encoder.study.scoring import labeled_slices, organs_present, score

WITHIN_VOLUME = "within-volume"
HELD_OUT_CASES = "held-out cases"
CROSS_PATIENT = "cross-patient"


@dataclass(frozen=True)
class Method:
    """A way to train a segmenter: ``options`` are :class:`~smp_diffusion_encoder.finetune.config.FinetuneConfig`
    fields (budget, seed, image size, device and precision come from the study)."""

    name: str
    label: str
    options: Mapping[str, Any]

    def config(self, budget: str, seed: int, study: StudyConfig) -> FinetuneConfig:
        size = study.image_size if study.image_size is not None else self.options.get("image_size")
        return FinetuneConfig(
            **{
                "label_table": study.label_table,
                **self.options,
                "budget": budget,
                "seed": seed,
                "image_size": size,
                "device": study.device,
                "precision": study.precision,
            }
        )


def standard_methods(
    encoder: str = "ddpm-ct", weights: str | None = "ct", *, unfreeze_at: int = 250, mlp_members: int = 10
) -> dict[str, Method]:
    """The benchmark's methods, by name; every one trains on the schedule rule
    (:mod:`smp_diffusion_encoder.finetune.schedule`).

    * ``ddpm-probe``, ``ddpm-mlp``, ``ddpm-unet``: the pretrained encoder, frozen, with the paper's linear
      probe, the MLP ensemble (class-balanced pixels), an smp Unet decoder, each with the default recipe
      (augmented views, :class:`~smp_diffusion_encoder.finetune.config.FinetuneConfig`);
    * ``ddpm-unet-noaug``, ``ddpm-unet-nocontrast``, ``ddpm-unet-contrast``: the decoder without augmentation
      (the recipe of release 0.2), with nnU-Net's spatial and intensity set only, with contrast phases only
      (the augmentation ablation);
    * ``ddpm-mlp-uniform``: the MLP ensemble on uniformly drawn pixels, as Baranchuk et al. trained it;
    * ``ddpm-unet-ft``: the same decoder, then the encoder unfreezes at step ``unfreeze_at`` at a tenth of the
      learning rate;
    * ``random-unet``, ``random-probe``: ``ddpm-unet`` and ``ddpm-probe`` with random encoder weights (does
      pretraining matter? a decoder can learn around poor features, a linear probe cannot);
    * ``resnet34-scratch``: ``smp.Unet("resnet34")`` trained end to end from random weights (the standard
      supervised baseline; same loss, learning rate and image size as the decoders: ``encoder``'s, so with
      weights that record a pixel spacing the same preprocessing too).
    """
    base = {"encoder": encoder, "encoder_weights": weights}
    size = preprocessing_for(encoder, weights).image_size
    return {
        m.name: m
        for m in (
            Method("ddpm-probe", f"{encoder} + linear probe", {**base, "method": "probe"}),
            Method("ddpm-mlp", f"{encoder} + MLP ensemble", {**base, "method": "mlp", "mlp_members": mlp_members}),
            Method(
                "ddpm-mlp-uniform",
                f"{encoder} + MLP ensemble, uniform pixels",
                {**base, "method": "mlp", "mlp_members": mlp_members, "pixel_sampling": "uniform"},
            ),
            Method("ddpm-unet", f"{encoder} + Unet decoder (frozen)", {**base, "method": "unet"}),
            Method(
                "ddpm-unet-noaug",
                f"{encoder} + Unet decoder, no augmentation (the 0.2 recipe)",
                {**base, "method": "unet", "augment": "none", "z_context_mm": 0.0},
            ),
            Method(
                "ddpm-unet-nocontrast",
                f"{encoder} + Unet decoder, spatial + intensity augmentation only",
                {**base, "method": "unet", "augment": "spatial-intensity"},
            ),
            Method(
                "ddpm-unet-contrast",
                f"{encoder} + Unet decoder, contrast phases only",
                {**base, "method": "unet", "augment": "contrast"},
            ),
            Method(
                "ddpm-unet-ft",
                f"{encoder} + Unet decoder, encoder tuned",
                {**base, "method": "unet", "unfreeze_at": unfreeze_at},
            ),
            Method(
                "random-unet",
                f"{encoder} random weights + Unet decoder",
                {**base, "method": "unet", "encoder_weights": None},
            ),
            Method(
                "random-probe",
                f"{encoder} random weights + linear probe",
                {**base, "method": "probe", "encoder_weights": None},
            ),
            Method(
                "resnet34-scratch",
                "smp Unet resnet34 from scratch",
                {
                    "method": "unet",
                    "encoder": "resnet34",
                    "encoder_weights": None,
                    "unfreeze_at": 0,
                    "encoder_lr_scale": 1.0,
                    "image_size": size,
                },
            ),
        )
    }


@dataclass(frozen=True)
class Holdout:
    """What a study trains on and what it scores.

    Attributes:
        train_cases: labeled cases budgets are drawn from.
        pool: ``{case_id: z}`` slices of ``train_cases`` that may train or validate (``{}``: all).
        evaluation: ``[(case, z indices)]`` scored slices of held-out cases of the same data (canonical z).
        protocol: the name of that evaluation (:data:`WITHIN_VOLUME` or :data:`HELD_OUT_CASES`).
        tests: other labeled scans, scored whole (:data:`CROSS_PATIENT`).
        description: one line for reports.
    """

    train_cases: tuple[Case, ...]
    pool: Mapping[str, Sequence[int]]
    evaluation: tuple[tuple[Case, tuple[int, ...]], ...]
    protocol: str
    description: str
    tests: tuple[Case, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)


def holdout(
    root_or_cases: str | os.PathLike[str] | Sequence[Case],
    config: StudyConfig | None = None,
    *,
    tests: Sequence[Case] = (),
    within_volume: bool = True,
) -> Holdout:
    """Held-out cases (several labeled cases) or z blocks (one labeled case), plus ``tests``; see the module
    docstring. A test case with the id of a training case is refused (it would be scored on what trained).

    ``within_volume=False`` holds nothing of the labeled cases out: every slice may train and only ``tests``
    are scored (the demo: it chooses nothing, so it needs no validation data).
    """
    config = config or StudyConfig()
    cases = labeled_cases(root_or_cases)
    clash = sorted({c.case_id for c in cases} & {t.case_id for t in tests})
    if clash:
        raise ConfigError(f"test cases {clash} are also labeled training cases")
    test_text = f"; {len(tests)} other scan(s) scored whole ({', '.join(t.case_id for t in tests)})" if tests else ""
    if not within_volume:
        if not tests:
            raise ConfigError("within_volume=False needs other scans to score (tests)")
        return Holdout(
            tuple(cases),
            {},
            (),
            CROSS_PATIENT,
            f"every slice of {', '.join(c.case_id for c in cases)} may train; nothing of it is scored{test_text}",
            tuple(tests),
            {"within_volume": False},
        )
    table = read_label_table(config.label_table) if config.label_table else None
    if len(cases) == 1:
        (case,) = cases
        label = read_label_map(case.label, read_volume(case.image), table=table)  # type: ignore[arg-type]
        split = heldout_split(
            case.case_id, labeled_or_organ_slices(label), block=config.block, gap=config.gap, seed=config.holdout_seed
        )
        text = (
            f"one labeled case ({case.case_id}): alternating z blocks of {config.block} train / {config.block} "
            f"evaluated slices with {config.gap} slices dropped between them (phase seed {config.holdout_seed}); "
            f"{len(split.train)} train-side and {len(split.evaluation)} evaluated slices{test_text}"
        )
        return Holdout(
            (case,),
            split.by_case("train"),
            ((case, tuple(split.by_case("evaluation")[case.case_id])),),
            WITHIN_VOLUME,
            text,
            tuple(tests),
            {"block": config.block, "gap": config.gap, "seed": config.holdout_seed},
        )
    if not 1 <= config.test_cases < len(cases):
        raise ConfigError(
            f"test_cases must be in [1, {len(cases) - 1}] for {len(cases)} labeled cases, got {config.test_cases}"
        )
    order = np.random.default_rng(config.holdout_seed).permutation(len(cases))
    test = sorted((cases[i] for i in order[: config.test_cases]), key=lambda c: c.case_id)
    train = tuple(sorted((cases[i] for i in order[config.test_cases :]), key=lambda c: c.case_id))
    evaluation = tuple((case, labeled_slices(case, table)) for case in test)  # () = the whole case
    text = (
        f"{len(cases)} labeled cases: {len(test)} held out whole (seed {config.holdout_seed}), budgets drawn from "
        f"the other {len(train)}{test_text}"
    )
    return Holdout(
        train,
        {},
        evaluation,
        HELD_OUT_CASES,
        text,
        tuple(tests),
        {"test_cases": config.test_cases, "seed": config.holdout_seed},
    )


Observer = Callable[[Method, str, int, str, Case, np.ndarray, np.ndarray, tuple[int, ...]], None]


def run_study(
    plan: Holdout,
    out_dir: str | os.PathLike[str],
    methods: Sequence[Method],
    config: StudyConfig | None = None,
    *,
    observe: Observer | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    postprocessing: Mapping[str, PostprocessingConfig] | None = None,
) -> list[dict[str, Any]]:
    """Train every (budget, seed, method) once and score it on every held-out set; returns all rows (also in
    ``out_dir/results.csv``).

    ``observe`` is called after each scoring with ``(method, budget, seed, protocol, case, gt, pred, z)``
    (canonical label maps of the scored slices; ``z`` their indices): used for overlays.

    ``postprocessing``: ``{name: PostprocessingConfig}`` variants to score every trained model with, besides
    the model folder's own (an ablation of the post-processing without retraining: the model's outputs are
    computed once per scan); their rows are named ``"<method>/<name>"``.
    """
    config = config or StudyConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    rows = read_results_csv(csv_path) if csv_path.is_file() else []
    done = {(r["method"], r["budget"], r["seed"]) for r in rows}
    jobs = [(b, s, m) for b in config.budgets for s in config.seeds for m in methods]
    table = read_label_table(config.label_table) if config.label_table else None
    test_slices = {case.case_id: labeled_slices(case, table) for case in plan.tests}  # () = the whole scan
    for i, (budget, seed, method) in enumerate(jobs, 1):
        if (method.name, budget, seed) in done:
            continue
        log(f"[{i}/{len(jobs)}] {method.label}: budget {budget}, seed {seed}")
        run_dir = out / "runs" / method.name / _safe(budget) / f"seed{seed}"
        if run_dir.exists():  # an interrupted run: start it again (results are only kept when complete)
            shutil.rmtree(run_dir)
        tick = time.perf_counter()
        result = finetune(
            plan.train_cases,
            method.config(budget, seed, config),
            out_dir=run_dir,
            pool=plan.pool or None,
            progress=progress,
            cache_dir=out / "feature_cache",
        )
        seconds = time.perf_counter() - tick
        n_train = len(read_split_json(run_dir / "split.json").train)
        model = load_model(result.model_dir)
        variants = [(method, model)] + [
            (
                dataclasses.replace(method, name=f"{method.name}/{name}", label=f"{method.label}, {name}"),
                dataclasses.replace(model, postprocessing=post),
            )
            for name, post in (postprocessing or {}).items()
        ]
        if len(variants) > 1:  # one model pass per scan, whatever the variants
            memo = _MemoModule(model.module)
            variants = [(m, dataclasses.replace(v, module=memo)) for m, v in variants]
        scored = [(plan.protocol, case, zs) for case, zs in plan.evaluation]
        scored += [(CROSS_PATIENT, case, test_slices[case.case_id]) for case in plan.tests]
        for protocol, case, zs in scored:
            for shown, variant in variants:
                metrics, gt, pred, z = score(
                    variant, case, zs, device=config.device, precision=config.precision, label_table=table
                )
                rows.append(
                    _row(
                        shown,
                        budget,
                        n_train,
                        seed,
                        protocol,
                        case.case_id,
                        metrics,
                        seconds,
                        result,
                        present=organs_present(gt),
                        errors=(volume_ratios(gt, pred), confusion_matrix(gt, pred)),
                    )
                )
                if observe is not None:
                    observe(shown, budget, seed, protocol, case, gt, pred, z)
        write_results_csv(rows, csv_path)
        if not config.keep_models:
            shutil.rmtree(result.model_dir)
            (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    return rows


def _row(
    method: Method,
    budget: str,
    n_train: int,
    seed: int,
    protocol: str,
    case: str,
    metrics: Mapping[str, float],
    seconds: float,
    result: FinetuneResult,
    *,
    present: Sequence[str],
    errors: tuple[Mapping[str, float], np.ndarray],
) -> dict[str, Any]:
    dsc = [metrics[f"{o}_DSC"] for o in FLARE_ORGANS]
    nsd = [metrics[f"{o}_NSD"] for o in FLARE_ORGANS]
    ratios, counts = errors
    return {
        "method": method.name,
        "method_label": method.label,
        "budget": budget,
        "n_train_slices": n_train,
        "seed": seed,
        "case": case,
        "protocol": protocol,
        "present_DSC": nan_mean(metrics[f"{o}_DSC"] for o in present),
        "present_NSD": nan_mean(metrics[f"{o}_NSD"] for o in present),
        "organs_present": " ".join(present),
        "mean_DSC": nan_mean(dsc),
        "mean_NSD": nan_mean(nsd),
        "train_seconds": round(seconds, 1),
        **metrics,
        "steps": result.steps,
        "flattened": "" if result.flattened is None else str(result.flattened).lower(),
        "best_val_dice": "" if result.best_val_dice is None else round(result.best_val_dice, 4),
        **{f"{o}_VolRatio": ratios[o] for o in FLARE_ORGANS},
        "confusion": json.dumps(counts.tolist()),
    }


class _MemoModule(nn.Module):
    """A model whose outputs are remembered by input: scoring one model under several post-processing variants
    runs it once per batch of slices (the variants differ only after the model)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inner = module
        self._memo: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = hashlib.sha1(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest() + str(tuple(x.shape))
        if key not in self._memo:
            self._memo[key] = self.inner(x)
        return self._memo[key]


def _safe(budget: str) -> str:
    return budget.replace("%", "pct").replace(" ", "")


__all__ = [
    "CROSS_PATIENT",
    "HELD_OUT_CASES",
    "WITHIN_VOLUME",
    "Holdout",
    "Method",
    "holdout",
    "organs_present",
    "run_study",
    "score",
    "standard_methods",
]
