"""``finetune``: train a linear probe, an MLP ensemble or an smp decoder on a few labeled slices, in one loop.

Pipeline: labeled cases -> preprocessing of the encoder's weights (HU window, pixel spacing, size) -> seeded
few-shot split (optionally with validation slices), or a split the caller gives (``DIR/split.json``) ->
schedule from the rule of :mod:`~smp_diffusion_encoder.finetune.schedule` -> frozen-encoder features cached
once (fp16) -> :class:`~smp_diffusion_encoder.training.Trainer` with
:class:`~smp_diffusion_encoder.finetune.steps.ProbeStep`, :class:`~smp_diffusion_encoder.finetune.steps.MLPStep`
or :class:`~smp_diffusion_encoder.finetune.steps.DecoderStep` -> a model folder ``DIR/model`` that
``smp-diffusion predict`` runs (:func:`~smp_diffusion_encoder.formats.save_probe` or
:func:`~smp_diffusion_encoder.formats.save_segmenter`).

``DIR`` also holds ``config.json`` (the :class:`~smp_diffusion_encoder.finetune.config.FinetuneConfig` and what
was resolved from it: weights, preprocessing, schedule), the loop's ``checkpoint.pt``, ``metrics.csv``,
``loss.png`` (training loss and validation, titled) and ``summary.json`` (:class:`FinetuneResult`: when and why
the run stopped, the best validation score and its step, whether the loss had flattened). ``resume=True``
continues a run exactly.

Data-parallel: launched under ``torchrun`` the same call trains on every process (each caches its own
features; the global batch is split over the processes; gradients are averaged) and rank 0 writes the files.

Example:
    >>> config = FinetuneConfig(method="probe", budget="4")                       # doctest: +SKIP
    >>> result = finetune("data/FLARE22", config, out_dir="runs/probe4")          # doctest: +SKIP
    >>> result.model_dir, result.reason                                           # doctest: +SKIP
    (PosixPath('runs/probe4/model'), 'schedule complete (500 steps)')
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch import nn

from smp_diffusion_encoder._device import autocast, resolve_device, resolve_precision
from smp_diffusion_encoder._io import atomic_write_json
from smp_diffusion_encoder.data.flare import Case
from smp_diffusion_encoder.data.remap import FLARE_NUM_CLASSES
from smp_diffusion_encoder.data.slicer_seg import read_label_table
from smp_diffusion_encoder.data.splits import Split, write_split_json
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.evaluation import mean_slice_dice
from smp_diffusion_encoder.finetune.batches import pixel_batches, slice_batches
from smp_diffusion_encoder.finetune.config import FinetuneConfig
from smp_diffusion_encoder.finetune.data import (
    LabeledSlices,
    augmented_views,
    build_split,
    gather,
    labeled_cases,
    load_labeled,
    split_path,
    views_per_slice,
)
from smp_diffusion_encoder.finetune.ensemble import finetune_ensemble
from smp_diffusion_encoder.finetune.result import (
    CONFIG_NAME,
    MEMBERS_DIR_NAME,
    MODEL_DIR_NAME,
    SUMMARY_NAME,
    FinetuneResult,
    recorded_settings,
)
from smp_diffusion_encoder.finetune.schedule import SchedulePlan, plan_schedule
from smp_diffusion_encoder.finetune.steps import DecoderStep, MLPStep, ProbeStep, decoder_param_groups
from smp_diffusion_encoder.formats.model_folder import save_probe, save_segmenter, write_postprocessing
from smp_diffusion_encoder.heads import FeatureCache
from smp_diffusion_encoder.heads.probe_model import ProbeModel, predict_classes
from smp_diffusion_encoder.inference.postprocess import PostprocessingConfig
from smp_diffusion_encoder.registry.records import resolve
from smp_diffusion_encoder.registry.weights import load_encoder, use_pretrained
from smp_diffusion_encoder.training import EarlyStopping, TrainConfig, Trainer, load_checkpoint
from smp_diffusion_encoder.training.curves import loss_flattened
from smp_diffusion_encoder.training.distributed import barrier, init_distributed


def finetune(
    root_or_cases: str | os.PathLike[str] | Sequence[Case],
    config: FinetuneConfig | None = None,
    *,
    out_dir: str | os.PathLike[str],
    split: Split | None = None,
    pool: Mapping[str, Iterable[int]] | None = None,
    resume: bool = False,
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> FinetuneResult:
    """Fine-tune on the labeled cases of ``root_or_cases`` as ``config`` says; see the module docstring.

    Args:
        config: the job's settings (default :class:`FinetuneConfig`: an smp Unet decoder on the frozen
            ``ddpm-ct`` encoder with its default CT weights, 4 labeled slices, the schedule rule).
        split: a given :class:`~smp_diffusion_encoder.data.splits.Split` instead of drawing ``config.budget``
            (its ``train`` slices train, its ``evaluation`` slices validate).
        pool: ``{case_id: z}`` slices the budget and validation may be drawn from (default: all), e.g. the
            train side of a held-out split.
        resume: continue ``out_dir``'s checkpoint; the settings must be the first run's (else
            :class:`ConfigError`, before anything is written).
        cache_dir: a folder for the frozen encoder's features of the labeled slices (shared by the runs of a
            study: an encoder's features of a slice are computed once; see
            :class:`~smp_diffusion_encoder.heads.FeatureCache`).

    Raises:
        ConfigError: bad settings, an encoder that is not registered for ``probe``/``mlp``, a split that
            names slices that do not exist.
        InputFileError: unreadable or inconsistent data (see :func:`~smp_diffusion_encoder.data.volume.read_volume`).
    """
    config = config or FinetuneConfig()
    if config.ensemble > 1:
        return finetune_ensemble(
            finetune,
            root_or_cases,
            config,
            out_dir=out_dir,
            split=split,
            pool=pool,
            resume=resume,
            progress=progress,
            cache_dir=cache_dir,
        )
    info = init_distributed(config.device) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    world, rank = (info.world_size, info.rank) if info else (1, 0)
    device = info.device if info else resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    batch_size = config.resolved_batch_size
    if batch_size % world:
        raise ConfigError(f"batch_size {batch_size} is not divisible by the {world} processes")
    out = Path(out_dir)
    ckpt = out / "checkpoint.pt"
    if (out / MEMBERS_DIR_NAME).is_dir():
        raise ConfigError(
            f"{out} holds an ensemble run (its models are in {out / MEMBERS_DIR_NAME}): continue it with the same "
            f"--ensemble N and --resume, or choose another --out"
        )
    if ckpt.exists() and not resume:
        raise ConfigError(
            f"{ckpt} exists: continue that run with --resume (resume=True in Python), or choose another --out"
        )
    if resume and not ckpt.exists():
        raise ConfigError(f"resume: no checkpoint at {ckpt}")
    encoder = load_encoder(config.encoder, config.encoder_weights, image_size=config.image_size)  # read once
    weights, prep = encoder.pretrained_cfg.weights, encoder.pretrained_cfg.preprocessing
    table = read_label_table(config.label_table) if config.label_table else None
    volumes, labeled = load_labeled(labeled_cases(root_or_cases), prep, label_table=table)
    if split is None:
        split = build_split(
            {c: lab for c, (_, lab) in volumes.items()},
            config.budget,
            config.seed,
            val_fraction=config.val_fraction,
            pool=pool,
            labeled=labeled,
        )
        _warn_unused_labels(split, labeled)
    else:
        _check_split(split, volumes, labeled)
    plan = plan_schedule(
        config.method,
        n_slices=len(split.train),
        image_size=prep.image_size,
        batch_size=batch_size,
        n_val=len(split.evaluation),
        min_val_slices=config.min_val_slices,
        steps=config.steps,
        scale=config.steps_scale,
        augmented=config.augment != "none",
    )
    views = config.augment_views or views_per_slice(len(split.train))
    settings = recorded_settings(
        config,
        encoder_weights=weights,
        split=split.to_dict(),
        preprocessing=prep.to_dict(),
        schedule=plan.to_dict(),
        views_per_slice=views,
    )
    state = load_checkpoint(ckpt) if resume else None
    if state is not None and state["extra"].get("finetune") != settings:  # checked before anything is written
        raise ConfigError(f"resume: {ckpt} was trained with {state['extra'].get('finetune')}, not {settings}")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_split_json(split_path(out), split)
        atomic_write_json(out / CONFIG_NAME, {**settings, "device": config.device, "precision": precision})
    train, val = gather(volumes, split.train), gather(volumes, split.evaluation)
    n_plain = len(train)
    train = augmented_views(train, views, config.augment, config.seed, prep.hu_window)

    torch.manual_seed(config.seed)
    if config.method in ("probe", "mlp"):
        model, cache, predict, save = _head(config, encoder, prep, val, out, device, cache_dir, precision)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.resolved_lr)
        step: Callable[..., Any] = ProbeStep() if config.method == "probe" else MLPStep()
    else:
        extra = {} if config.decoder_channels is None else {"decoder_channels": list(config.decoder_channels)}
        segmenter = smp.create_model(
            config.architecture,
            encoder_name=config.encoder,
            encoder_weights=None,
            in_channels=1,
            classes=FLARE_NUM_CLASSES,
            **extra,
        )
        use_pretrained(segmenter.encoder, encoder)
        segmenter.to(device)
        segmenter.encoder.requires_grad_(False)
        segmenter.to(memory_format=torch.channels_last)  # faster convolutions (1.26x a decoder step); saved contiguous
        model, cache = segmenter, FeatureCache(segmenter.encoder, cache_dir, precision=precision)
        optimizer = torch.optim.AdamW(decoder_param_groups(segmenter, config.resolved_lr, config.encoder_lr_scale))
        step = DecoderStep(config.unfreeze_at)
        predict = _smp_predictor(segmenter, val, precision)
        save = lambda: _with_postprocessing(save_segmenter(segmenter, out / MODEL_DIR_NAME, prep), config)  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, plan.lr_factor)

    features = _train_features(cache, train, n_plain) if config.unfreeze_at != 0 else None
    stopper = EarlyStopping("val_dice", mode="max", patience=config.patience)

    def validate(bare: nn.Module, ema: nn.Module | None, at: int) -> dict[str, float]:
        score = mean_slice_dice(val.labels.numpy(), predict(), FLARE_NUM_CLASSES)
        if rank == 0 and stopper.improves(score):
            save()  # the model folder always holds the best validated model
        return {"val_dice": score}

    title = (
        f"{config.method} on {config.encoder} ({weights or 'random'} weights), {len(split.train)} labeled "
        f"slices, seed {config.seed}"
    )
    train_config = TrainConfig(
        max_steps=plan.steps,
        out_dir=str(out),
        grad_clip=1.0,
        log_every=max(1, min(10, plan.steps // 20)),
        ckpt_every=max(1, plan.steps // 10),
        val_every=plan.val_every,
        seed=config.seed,
        ema_decay=None,
        progress=progress,
        title=title,
        precision=precision,
    )
    trainer = Trainer(
        model,
        optimizer,
        step,
        train_config,
        scheduler=scheduler,
        device=device,
        validate=validate if plan.val_every else None,
        early_stopping=stopper if plan.val_every else None,
        extra_state=lambda at: {"finetune": settings},
    )
    if state is not None:
        trainer.resume(state)
    if config.method == "mlp":
        assert features is not None
        data = pixel_batches(
            train, features, batch_size // world, config.mlp_members, config.seed, rank, config.pixel_sampling
        )
    else:
        data = slice_batches(
            train,
            features,
            batch_size // world,
            config.seed,
            rank,
            world,
            needs_image=config.method == "unet" and config.unfreeze_at is not None,
            unfreeze_at=config.unfreeze_at,
        )
    trainer.fit(data)
    if rank == 0 and (not plan.val_every or not (out / MODEL_DIR_NAME).is_dir()):
        save()
    result = _result(out, trainer, plan, stopper)
    if rank == 0:
        atomic_write_json(out / SUMMARY_NAME, result.to_dict())
    if info is not None:
        barrier()
    return result


def _with_postprocessing(model_dir: Path, config: FinetuneConfig) -> Path:
    """Record the post-processing ``predict`` applies (``postprocessing.json``) in a just-written model folder."""
    write_postprocessing(
        model_dir, PostprocessingConfig(largest_component=config.largest_component, z_context_mm=config.z_context_mm)
    )
    return model_dir


def _train_features(cache: FeatureCache, train: LabeledSlices, n_plain: int) -> list[torch.Tensor]:
    """Frozen features of the training views: the labeled slices themselves through ``cache`` (kept on disk
    when it has a folder: a study's runs share them), their augmented copies in memory only (each run draws its
    own; gigabytes on disk would cost more than they save)."""
    plain = cache.features(list(train.ids[:n_plain]), train.images[:n_plain])
    if len(train) == n_plain:
        return plain
    memory = FeatureCache(cache.encoder, None, encoder_key=cache.encoder_key, precision=cache.precision)
    views = memory.features(list(train.ids[n_plain:]), train.images[n_plain:])
    return [torch.cat([a, b]) for a, b in zip(plain, views)]


def _result(out: Path, trainer: Trainer, plan: SchedulePlan, stopper: EarlyStopping) -> FinetuneResult:
    done = trainer.global_step
    if done < plan.steps:
        reason = (
            f"early stopping: validation mean slice DSC did not improve for {stopper.patience} validations "
            f"after step {stopper.best_step}"
        )
    else:
        reason = f"schedule complete ({plan.steps} steps)"
    flat = loss_flattened(trainer.history)
    return FinetuneResult(
        out / MODEL_DIR_NAME,
        done,
        plan.steps,
        reason,
        stopper.best if plan.val_every else None,
        stopper.best_step if plan.val_every else None,
        flat.flat,
        flat.text,
        plan.reason,
    )


def _head(
    config: FinetuneConfig,
    encoder: nn.Module,
    prep: Any,
    val: LabeledSlices,
    out: Path,
    device: torch.device,
    cache_dir: str | os.PathLike[str] | None,
    precision: str,
) -> tuple[nn.Module, FeatureCache, Callable[[], np.ndarray], Callable[[], Path]]:
    """The probe / MLP ensemble on a frozen registered encoder: trainable head, cache, predictor, saver."""
    try:
        spec = resolve(config.encoder).spec
    except KeyError as err:
        raise ConfigError(f"method {config.method!r} needs a ddpm-ct encoder: {err.args[0]}") from None
    probe_model = ProbeModel.build(
        spec.unet,
        spec.features,
        FLARE_NUM_CLASSES,
        head="linear" if config.method == "probe" else "mlp",
        num_models=config.mlp_members,
    )
    use_pretrained(probe_model.encoder, encoder)
    probe_model.to(device)
    probe_model.encoder.to(memory_format=torch.channels_last)  # faster convolutions; saved contiguous
    cache = FeatureCache(probe_model.encoder, cache_dir, precision=precision)
    return (
        probe_model.probe,
        cache,
        _head_predictor(probe_model.probe, cache, val, precision),
        lambda: _with_postprocessing(save_probe(probe_model, out / MODEL_DIR_NAME, prep), config),
    )


def _check_split(
    split: Split, volumes: Mapping[str, tuple[np.ndarray, np.ndarray]], labeled: Mapping[str, Sequence[int]]
) -> None:
    """A given split must name loaded cases and existing slices (labeled ones, in a partly labeled case), and
    train on at least one slice."""
    if not split.train:
        raise ConfigError("the given split has no training slice")
    for c, z in (*split.train, *split.evaluation):
        if c not in volumes:
            raise ConfigError(f"the split names case {c!r}, which is not among the labeled cases {sorted(volumes)}")
        if not 0 <= z < volumes[c][1].shape[0]:
            raise ConfigError(f"the split names slice z={z} of {c!r}, which has {volumes[c][1].shape[0]} slices")
        if c in labeled and z not in labeled[c]:
            raise ConfigError(
                f"the split names slice z={z} of {c!r}, which its sidecar does not list as labeled "
                f"(labeled: {sorted(labeled[c])})"
            )


def _warn_unused_labels(split: Split, labeled: Mapping[str, Sequence[int]]) -> None:
    """A slice-count budget below the stated labeled slices leaves labels unused: say so."""
    total = sum(len(zs) for zs in labeled.values())
    used = sum(1 for c, _ in (*split.train, *split.evaluation) if c in labeled)
    if used < total:
        warnings.warn(
            f"budget {split.budget!r} trains on {used} of the {total} slices the sidecars list as labeled; "
            f"budget 'all' uses every one",
            UserWarning,
            stacklevel=3,
        )


def _head_predictor(
    probe: nn.Module, cache: FeatureCache, val: LabeledSlices, precision: str
) -> Callable[[], np.ndarray]:
    val_features = cache.features(list(val.ids), val.images) if len(val) else []

    def predict() -> np.ndarray:
        return predict_classes(probe, val_features, val.labels.shape[-2:], precision=precision).numpy()

    return predict


def _smp_predictor(model: nn.Module, val: LabeledSlices, precision: str) -> Callable[[], np.ndarray]:
    def predict() -> np.ndarray:
        dev = next(model.parameters()).device
        model.eval()
        with torch.no_grad(), autocast(dev, precision):
            return np.concatenate([model(b.to(dev)).argmax(1).cpu().numpy() for b in val.images.split(8)])

    return predict
