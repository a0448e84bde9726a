"""``finetune``: train a linear probe, an MLP ensemble or an smp decoder on a few labeled slices, in one loop.

Pipeline: labeled cases -> preprocessing of the encoder (HU window, image size) -> seeded few-shot split
with disjoint validation slices, or a split the caller gives (``out_dir/split.json``) -> frozen-encoder
features cached once (fp16) -> :class:`~smp_diffusion_encoder.training.Trainer` with
:class:`~smp_diffusion_encoder.finetune.steps.ProbeStep`, :class:`~smp_diffusion_encoder.finetune.steps.MLPStep`
or :class:`~smp_diffusion_encoder.finetune.steps.DecoderStep` -> a model folder ``out_dir/model`` that
``smp-diffusion predict`` runs (:func:`~smp_diffusion_encoder.inference.save_probe` or
:func:`~smp_diffusion_encoder.inference.save_segmenter`).

Validation every ``val_every`` steps scores the validation slices by mean slice DSC (:func:`mean_slice_dice`);
the model folder always holds the best-scoring model so far (the last one when there is no validation), and
training stops early after ``patience`` validations without improvement. ``out_dir`` also holds the
loop's ``checkpoint.pt``, ``metrics.csv`` and ``loss.png``; ``resume=True`` continues a run exactly.

Data-parallel: launched under ``torchrun`` the same call trains on every process (each caches its own
features; the global batch is split over the processes; gradients are averaged) and rank 0 writes the files.

Example:
    >>> model_dir = finetune("data/FLARE22", method="probe", budget="4", out_dir="runs/probe4")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import segmentation_models_pytorch as smp
import segmentation_models_pytorch.encoders as smp_encoders
import torch
from torch import nn

from smp_diffusion_encoder.data.augment import Strength, build_augmentation
from smp_diffusion_encoder.data.flare import Case
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.data.remap import FLARE_NUM_CLASSES
from smp_diffusion_encoder.data.splits import Split, write_split_json
from smp_diffusion_encoder.encoder.features import FeatureConfig
from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.evaluation import slice_dice
from smp_diffusion_encoder.finetune.data import (
    LabeledSlices,
    build_split,
    gather,
    labeled_cases,
    load_cases,
    split_path,
)
from smp_diffusion_encoder.finetune.steps import DecoderStep, MLPStep, ProbeStep, decoder_param_groups
from smp_diffusion_encoder.heads import FeatureCache, sample_pixels
from smp_diffusion_encoder.inference.model_dir import ProbeModel, save_probe, save_segmenter
from smp_diffusion_encoder.models.config import resolve_config
from smp_diffusion_encoder.training import EarlyStopping, InfiniteBatchSampler, TrainConfig, Trainer, load_checkpoint
from smp_diffusion_encoder.training.distributed import barrier, init_distributed

Method = Literal["probe", "mlp", "unet"]
MODEL_DIR_NAME = "model"


def preprocessing_for(encoder: str, encoder_weights: str | None, image_size: int | None = None) -> PreprocessingConfig:
    """The preprocessing an encoder expects: from its weights' ``config.json``, else the U-Net preset's size.

    ``image_size`` overrides the size (the HU window always comes from the weights or the default). An
    encoder that is not a diffusion encoder (e.g. smp's ``resnet34``, for baselines) gets the default HU
    window and ``image_size`` (default 256).
    """
    entry = smp_encoders.encoders.get(encoder)
    if entry is None or "unet" not in entry.get("params", {}):
        if entry is None:
            _encoder_entry(encoder)  # raises: names the known diffusion encoders
        return PreprocessingConfig(image_size=image_size or 256)
    if encoder_weights is None:
        prep = PreprocessingConfig(image_size=resolve_config(entry["params"]["unet"]).image_size)
    else:
        from smp_diffusion_encoder.hub.download import download_file
        from smp_diffusion_encoder.hub.weights import read_config

        settings = entry["pretrained_settings"].get(encoder_weights)
        if settings is None:
            raise WeightsError(f"encoder {encoder!r} has no weights {encoder_weights!r}; available: "
                               f"{sorted(entry['pretrained_settings'])}")
        repo = settings["repo_id"]
        path = download_file(repo, "config.json", revision=settings.get("revision"))
        config = read_config(path, source=repo)
        if "preprocessing" not in config:
            raise WeightsError(f"{repo}/config.json: no 'preprocessing' (HU window, image size) recorded")
        prep = PreprocessingConfig.from_dict(config["preprocessing"])
    return prep if image_size is None else PreprocessingConfig(prep.hu_window, image_size)


def resolve_weights(encoder: str, encoder_weights: str | None) -> str | None:
    """``"auto"`` -> ``"ct"`` for a diffusion encoder that has default CT weights, else ``None``."""
    if encoder_weights != "auto":
        return encoder_weights
    entry = smp_encoders.encoders.get(encoder) or {}
    diffusion = "unet" in entry.get("params", {})
    return "ct" if diffusion and "ct" in entry.get("pretrained_settings", {}) else None


def mean_slice_dice(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Mean over slices of the mean organ DSC (:func:`~smp_diffusion_encoder.evaluation.slice_dice`).

    ``gt``, ``pred``: ``(N, H, W)`` ids. Per slice, organs absent from both gt and prediction are skipped
    (their 1.0 would inflate the score); a slice with no organ in either scores 1.0.
    """
    scores = []
    for g, p in zip(gt, pred):
        dice = slice_dice(g, p, num_classes)[1:]
        present = np.zeros(num_classes, bool)
        present[np.unique(g)] = present[np.unique(p)] = True
        scores.append(float(dice[present[1:]].mean()) if present[1:].any() else 1.0)
    return float(np.mean(scores)) if scores else float("nan")


def finetune(
    root_or_cases: str | os.PathLike[str] | Sequence[Case],
    *,
    method: Method,
    out_dir: str | os.PathLike[str],
    encoder: str = "ddpm-ct",
    encoder_weights: str | None = "auto",
    architecture: str = "Unet",
    budget: str = "4",
    split: Split | None = None,
    pool: Mapping[str, Iterable[int]] | None = None,
    seed: int = 0,
    steps: int = 300,
    lr: float | None = None,
    batch_size: int | None = None,
    image_size: int | None = None,
    val_fraction: float = 0.2,
    val_every: int = 25,
    patience: int = 5,
    augment: Strength = "none",
    unfreeze_at: int | None = None,
    encoder_lr_scale: float = 0.1,
    mlp_members: int = 10,
    resume: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Fine-tune on the labeled cases of ``root_or_cases``; returns the model folder ``out_dir/model``.

    Args:
        method: ``"probe"`` (linear probe on cached features), ``"mlp"`` (Baranchuk's MLP ensemble on
            cached features, ``mlp_members`` members, ``batch_size`` random pixels per member and step) or
            ``"unet"`` (smp ``architecture`` decoder on the frozen ``encoder``; ``unfreeze_at`` makes the
            encoder train from that step at ``lr * encoder_lr_scale``; ``unfreeze_at=0`` with
            ``encoder_lr_scale=1`` trains the whole network from the start, e.g. the ``resnet34`` baseline).
        encoder, encoder_weights: an smp encoder name and its weights key (``None``: random; ``"auto"``, the
            default: the encoder's default CT weights ``"ct"`` when it has them, else random). ``probe`` and
            ``mlp`` need a ``ddpm-ct*`` encoder; ``unet`` takes any smp encoder.
        budget: label budget (``"4"``, ``"1%"``, ``"2cases"``, ``"all"``), drawn with the project's policy.
        split: a given :class:`~smp_diffusion_encoder.data.splits.Split` instead (its ``train`` slices train,
            its ``evaluation`` slices validate); ``budget``, ``pool`` and ``val_fraction`` are then unused.
        pool: ``{case_id: z}`` slices the budget and validation may be drawn from (default: all), e.g. the
            train side of a held-out split.
        steps, lr, batch_size: optimizer steps, AdamW learning rate (default 1e-2 probe, 1e-3 mlp and unet),
            slices per step (pixels per member for ``mlp``; default 4 slices, 2048 pixels). Under ``torchrun``
            the batch is global and split over the processes.
        image_size: override of the encoder's preprocessing size.
        val_fraction, val_every, patience: validation share of the other slices, frequency, early stopping.
        augment: augmentation strength (features are then computed per step under ``no_grad``; unet only).
        resume: continue ``out_dir``'s checkpoint up to ``steps``; the other settings must be the first run's
            (checked: a mismatch raises :class:`ConfigError`).
    """
    if method not in ("probe", "mlp", "unet"):
        raise ConfigError(f"method must be 'probe', 'mlp' or 'unet', got {method!r}")
    if method != "unet" and (augment != "none" or unfreeze_at is not None):
        raise ConfigError(f"the {method} head trains on cached frozen features: augment and unfreeze_at need "
                          f"method='unet'")
    if batch_size is None:
        batch_size = 2048 if method == "mlp" else 4  # the MLP ensemble's batch counts pixels
    info = init_distributed(device) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    world, rank = (info.world_size, info.rank) if info else (1, 0)
    if batch_size % world:
        raise ConfigError(f"batch_size {batch_size} is not divisible by the {world} processes")
    out = Path(out_dir)
    ckpt = out / "checkpoint.pt"
    if ckpt.exists() and not resume:
        raise ConfigError(f"{ckpt} exists: pass resume=True to continue that run, or choose another out_dir")
    if resume and not ckpt.exists():
        raise ConfigError(f"resume: no checkpoint at {ckpt}")
    encoder_weights = resolve_weights(encoder, encoder_weights)
    prep = preprocessing_for(encoder, encoder_weights, image_size)
    volumes = load_cases(labeled_cases(root_or_cases), prep)
    if split is None:
        split = build_split({c: lab for c, (_, lab) in volumes.items()}, budget, seed, val_fraction=val_fraction,
                            pool=pool)
    else:
        _check_split(split, volumes)
    settings = {"method": method, "encoder": encoder, "encoder_weights": encoder_weights, "split": split.to_dict(),
                "architecture": architecture, "augment": augment, "unfreeze_at": unfreeze_at, "seed": seed,
                "lr": lr, "batch_size": batch_size, "encoder_lr_scale": encoder_lr_scale,
                "image_size": prep.image_size, "mlp_members": mlp_members if method == "mlp" else None}
    state = load_checkpoint(ckpt) if resume else None
    if state is not None and state["extra"].get("finetune") != settings:  # checked before anything is written
        raise ConfigError(f"resume: {ckpt} was trained with {state['extra'].get('finetune')}, not {settings}")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_split_json(split_path(out), split)
    train, val = gather(volumes, split.train), gather(volumes, split.evaluation)

    torch.manual_seed(seed)
    if method in ("probe", "mlp"):
        entry = _encoder_entry(encoder)
        probe_model = ProbeModel.build(entry["params"]["unet"], FeatureConfig.from_dict(entry["params"]["features"]),
                                       FLARE_NUM_CLASSES, head="linear" if method == "probe" else "mlp",
                                       num_models=mlp_members)
        if encoder_weights is not None:
            _load_encoder_weights(probe_model, encoder, encoder_weights)
        probe_model.to(device)
        cache = FeatureCache(probe_model.encoder)
        model: nn.Module = probe_model.probe
        default_lr = 1e-2 if method == "probe" else 1e-3
        optimizer = torch.optim.AdamW(model.parameters(), lr=default_lr if lr is None else lr)
        step: Callable[..., Any] = ProbeStep() if method == "probe" else MLPStep()
        predict = _head_predictor(probe_model.probe, cache, val)
        save: Callable[[], Path] = lambda: save_probe(probe_model, out / MODEL_DIR_NAME, prep)  # noqa: E731
    else:
        model = smp.create_model(architecture, encoder_name=encoder, encoder_weights=encoder_weights, in_channels=1,
                                 classes=FLARE_NUM_CLASSES).to(device)
        model.encoder.requires_grad_(False)
        cache = FeatureCache(model.encoder)
        optimizer = torch.optim.AdamW(decoder_param_groups(model, 1e-3 if lr is None else lr, encoder_lr_scale))
        step = DecoderStep(unfreeze_at)
        predict = _smp_predictor(model, val)
        save = lambda: save_segmenter(model, out / MODEL_DIR_NAME, prep)  # noqa: E731

    needs_cache = augment == "none" and unfreeze_at != 0
    features = cache.features(list(train.ids), train.images) if needs_cache else None
    stopper = EarlyStopping("val_dice", mode="max", patience=patience)

    def validate(bare: nn.Module, ema: nn.Module | None, at: int) -> dict[str, float]:
        score = mean_slice_dice(val.labels.numpy(), predict(), FLARE_NUM_CLASSES)
        if rank == 0 and (stopper.best is None or score > stopper.best):
            save()  # the model folder always holds the best validated model
        return {"val_dice": score}

    config = TrainConfig(max_steps=steps, out_dir=str(out), grad_clip=1.0, log_every=max(1, min(10, steps // 10)),
                         ckpt_every=0, val_every=val_every if len(val) else 0, seed=seed, ema_decay=None,
                         progress=progress)
    trainer = Trainer(model, optimizer, step, config, device=device, validate=validate if len(val) else None,
                      early_stopping=stopper if len(val) else None, extra_state=lambda at: {"finetune": settings})
    if state is not None:
        trainer.resume(state)
    if method == "mlp":
        assert features is not None
        data = _pixel_batches(train, features, batch_size // world, mlp_members, seed, rank, world)
    else:
        data = _batches(train, features, batch_size // world, seed, augment, rank, world,
                        needs_image=method == "unet" and (augment != "none" or unfreeze_at is not None),
                        unfreeze_at=unfreeze_at)
    trainer.fit(data)
    if rank == 0 and (not len(val) or not (out / MODEL_DIR_NAME).is_dir()):
        save()
    if info is not None:
        barrier()
    return out / MODEL_DIR_NAME


def _check_split(split: Split, volumes: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """A given split must name loaded cases and existing slices, and train on at least one slice."""
    if not split.train:
        raise ConfigError("the given split has no training slice")
    for c, z in (*split.train, *split.evaluation):
        if c not in volumes:
            raise ConfigError(f"the split names case {c!r}, which is not among the labeled cases {sorted(volumes)}")
        if not 0 <= z < volumes[c][1].shape[0]:
            raise ConfigError(f"the split names slice z={z} of {c!r}, which has {volumes[c][1].shape[0]} slices")


def _pixel_batches(train: LabeledSlices, features: list[torch.Tensor], pixels: int, members: int, seed: int,
                   rank: int, world: int) -> Callable[[int], Iterator[dict[str, Any]]]:
    """``data(start_step)`` for :class:`MLPStep`: each member's own uniformly drawn labeled pixels.

    Pixel draws are a function of ``(seed, step, member, rank)`` only (exact resume); their feature vectors
    are read from the native-resolution cache with :func:`~smp_diffusion_encoder.heads.sample_pixels`
    (bit-for-bit the upsampled stack's values, never materialized).
    """
    n, h, w = train.labels.shape

    def data(start_step: int) -> Iterator[dict[str, Any]]:
        at = start_step
        while True:
            vecs, labs = [], []
            for k in range(members):
                g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, at, k, rank]).generate_state(1)[0]))
                b = torch.randint(n, (pixels,), generator=g)
                ys, xs = torch.randint(h, (pixels,), generator=g), torch.randint(w, (pixels,), generator=g)
                vecs.append(sample_pixels(features, (h, w), b, ys, xs))
                labs.append(train.labels[b, ys, xs])
            yield {"labels": torch.stack(labs), "pixels": torch.stack(vecs), "step": at}
            at += 1

    return data


def _batches(
    train: LabeledSlices, features: list[torch.Tensor] | None, batch_size: int, seed: int, augment: Strength,
    rank: int, world: int, *, needs_image: bool, unfreeze_at: int | None,
) -> Callable[[int], Iterator[dict[str, Any]]]:
    """``data(start_step)`` for the Trainer: batch contents depend only on the step (exact resume).

    Cached features are used while the encoder is frozen and nothing is augmented; otherwise images
    (augmented per sample with a seed derived from its stream position).
    """
    aug = build_augmentation(augment) if augment != "none" else None

    def data(start_step: int) -> Iterator[dict[str, Any]]:
        per_rank = min(batch_size, max(1, len(train) // world))
        sampler = InfiniteBatchSampler(len(train), per_rank, seed=seed, start_step=start_step, rank=rank,
                                       world_size=world)
        for at, items in enumerate(sampler, start=start_step):
            idx = [i for i, _ in items]
            batch: dict[str, Any] = {"labels": train.labels[idx], "step": at}
            use_cache = features is not None and not (unfreeze_at is not None and at >= unfreeze_at)
            if use_cache:
                batch["features"] = [f[idx] for f in features]
            if needs_image or not use_cache:
                images, labels = train.images[idx], train.labels[idx]
                if aug is not None:
                    pairs = []
                    for (i, pos) in items:
                        aug.reseed(int(np.random.SeedSequence([seed, pos]).generate_state(1)[0]))
                        pairs.append(aug(train.images[i, 0].numpy(), train.labels[i].numpy().astype(np.uint8)))
                    images = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None])
                    labels = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
                batch.update(labels=labels, image=images)
            yield batch

    return data


def _head_predictor(probe: nn.Module, cache: FeatureCache, val: LabeledSlices) -> Callable[[], np.ndarray]:
    val_features = cache.features(list(val.ids), val.images) if len(val) else []

    def predict() -> np.ndarray:
        dev = next(probe.parameters()).device
        probe.eval()  # the MLP ensemble's BatchNorm uses its running statistics
        with torch.no_grad():
            return np.concatenate([
                probe([f[i:i + 8].to(dev) for f in val_features], val.labels.shape[-2:]).argmax(1).cpu().numpy()
                for i in range(0, len(val), 8)])

    return predict


def _smp_predictor(model: nn.Module, val: LabeledSlices) -> Callable[[], np.ndarray]:
    def predict() -> np.ndarray:
        dev = next(model.parameters()).device
        model.eval()
        with torch.no_grad():
            return np.concatenate([model(b.to(dev)).argmax(1).cpu().numpy() for b in val.images.split(8)])

    return predict


def _encoder_entry(encoder: str) -> dict[str, Any]:
    entry = smp_encoders.encoders.get(encoder)
    if entry is None or "unet" not in entry.get("params", {}):
        known = sorted(k for k, v in smp_encoders.encoders.items() if "unet" in v.get("params", {}))
        raise ConfigError(f"encoder {encoder!r} is not a registered diffusion encoder; known: {known}")
    return entry


def _load_encoder_weights(model: ProbeModel, encoder: str, weights: str) -> None:
    """Copy the U-Net weights of smp encoder ``encoder`` with ``weights`` into the probe's encoder."""
    source = smp_encoders.get_encoder(encoder, in_channels=1, depth=5, weights=weights)
    try:
        model.encoder.unet.load_state_dict(source.unet.state_dict())
    except RuntimeError as err:
        raise WeightsError(f"weights {weights!r} of {encoder!r} do not fit the probe's U-Net ({err})") from err
