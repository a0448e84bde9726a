"""DDPM pretraining of the diffusion U-Net on a slice store, single-process or under ``torchrun``.

:func:`prepare_store` turns the user's data (a slice store, a FLARE 2022 root or any folder of CT volumes)
into a slice store whose image size is the U-Net preset's. :func:`run_pretraining` builds model, AdamW,
optional linear LR warm-up, EMA, the :class:`~smp_diffusion_encoder.training.ddpm.DDPMStep` and the
seeded :class:`~smp_diffusion_encoder.training.sampler.InfiniteBatchSampler`, then runs the
:class:`~smp_diffusion_encoder.training.loop.Trainer`.

Run folder: ``config.json`` (U-Net config, preprocessing, schedule, optimization and loop settings: the
preprocessing travels with the weights), ``checkpoint.pt`` (see
:mod:`~smp_diffusion_encoder.training.checkpoint`), ``metrics.csv``, ``loss.png`` and, when the data was
not a store, ``slices/``.

``batch_size`` is the **global** batch: under ``torchrun --nproc_per_node=N`` each process takes
``batch_size / N`` samples per step, and the run trains on the same samples with the same noise as a single
process would (see the sampler), so results agree up to floating-point reduction order and a checkpoint can
be resumed at any world size that divides the global batch.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from smp_diffusion_encoder._io import atomic_write_json, read_json_object
from smp_diffusion_encoder.data.flare import FlareDataset, discover_volumes
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.data.slice_store import MANIFEST, SliceStore, build_slice_store
from smp_diffusion_encoder.diffusion.schedule import NoiseSchedule, ScheduleName, make_betas
from smp_diffusion_encoder.errors import ConfigError, DatasetLayoutError, InputFileError
from smp_diffusion_encoder.models import DiffusionUNet, UNetConfig
from smp_diffusion_encoder.training.checkpoint import load_checkpoint
from smp_diffusion_encoder.training.ddpm import DDPMStep
from smp_diffusion_encoder.training.distributed import DistInfo, barrier, init_distributed
from smp_diffusion_encoder.training.loop import CHECKPOINT_NAME, TrainConfig, Trainer
from smp_diffusion_encoder.training.precision import choose_precision
from smp_diffusion_encoder.training.sampler import InfiniteBatchSampler, PositionedDataset

RUN_FORMAT = "smp_diffusion_encoder.pretrain_run"
RUN_CONFIG = "config.json"


@dataclass(frozen=True)
class PretrainConfig:
    """What is trained, and how (everything that must not change when a run is resumed).

    Attributes:
        unet: the U-Net architecture (its ``image_size`` sets the preprocessing size).
        schedule, num_timesteps: the noise schedule.
        batch_size: global batch (all processes together).
        lr, weight_decay, warmup_steps: AdamW with a linear warm-up from ``lr / warmup_steps`` (0: constant).
        vlb_weight: hybrid-loss ``lambda`` (only used when ``unet.learn_sigma``).
        min_snr_gamma: ``None`` for the plain epsilon MSE, else min-SNR-gamma weighting over timesteps
            (see :class:`~smp_diffusion_encoder.training.ddpm.DDPMStep`).
        seed: model initialization, data order and diffusion noise.
    """

    unet: UNetConfig
    schedule: ScheduleName = "linear"
    num_timesteps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    vlb_weight: float = 0.001
    min_snr_gamma: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        make_betas(self.schedule, self.num_timesteps)  # validates the schedule
        if self.batch_size < 1 or self.lr <= 0 or self.warmup_steps < 0 or self.vlb_weight < 0:
            raise ConfigError(f"bad pretraining settings: batch_size={self.batch_size}, lr={self.lr}, "
                              f"warmup_steps={self.warmup_steps}, vlb_weight={self.vlb_weight}")
        if self.min_snr_gamma is not None and self.min_snr_gamma <= 0:
            raise ConfigError(f"min_snr_gamma must be > 0 or None, got {self.min_snr_gamma}")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "unet": self.unet.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        return cls(**{**d, "unet": UNetConfig.from_dict(d["unet"])})


def _same_settings(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Differences between two ``PretrainConfig.to_dict()``; a key a run predates counts as its default."""
    defaults = {f.name: f.default for f in dataclasses.fields(PretrainConfig)
                if f.default is not dataclasses.MISSING}
    return [f"{key}: checkpoint {saved.get(key, defaults.get(key))!r}, now {value!r}"
            for key, value in now.items() if saved.get(key, defaults.get(key)) != value]


def source_volumes(data: Path, *, include_labeled: bool = False) -> list[Path]:
    """Volumes to pretrain on: a FLARE root's unlabeled images (plus its labeled training images with
    ``include_labeled``), else every volume under ``data`` (a folder), or ``data`` itself (a file)."""
    if data.is_file():
        return [data]
    if (data / "Training").is_dir():
        ds = FlareDataset.discover(data)
        return [c.image for c in (*ds.unlabeled, *(ds.labeled if include_labeled else ()))]
    return discover_volumes(data)


def prepare_store(data: str | os.PathLike[str], run_dir: str | os.PathLike[str], image_size: int, *,
                  workers: int = 2, progress: bool = True) -> Path:
    """Return a slice store for ``data`` at ``image_size`` px, building ``run_dir/slices`` if ``data`` is not one.

    A store is built with the default (physical) preprocessing at ``image_size`` (see
    :class:`~smp_diffusion_encoder.data.preprocessing.PreprocessingConfig`); a FLARE root contributes its
    unlabeled images only.

    Raises:
        InputFileError: ``data`` is missing, holds no volumes, or is a store of another image size / empty.
    """
    data = Path(data)
    if not data.exists():
        raise DatasetLayoutError(data, "does not exist (expected a slice store, FLARE root or folder of volumes)")
    if (data / MANIFEST).is_file():
        store = data
    else:
        store = Path(run_dir) / "slices"
        build_slice_store(source_volumes(data), store, PreprocessingConfig(image_size=image_size), workers=workers,
                          progress=progress)
    ds = SliceStore(store)
    if ds.config.image_size != image_size:
        raise InputFileError(store, f"slices are {ds.config.image_size} px but the U-Net is trained at "
                             f"{image_size} px (rebuild the store with --image-size {image_size})")
    if len(ds) == 0:
        raise InputFileError(store, "the slice store holds no usable slices")
    return store


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_pretraining(store_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str], cfg: PretrainConfig, *,
                    max_steps: int, ema_decay: float | None = 0.9999, precision: str = "fp32",
                    grad_clip: float | None = 1.0, log_every: int = 10, ckpt_every: int = 1000, workers: int = 0,
                    milestones: Iterable[int] = (), command: str | None = None, resume: bool = False,
                    progress: bool = True, dist_info: DistInfo | None = None) -> Trainer:
    """Pretrain (or continue) a run in ``run_dir`` on the slice store ``store_dir``; returns the finished Trainer.

    ``resume=True`` continues exactly from ``run_dir/checkpoint.pt`` (or starts afresh if there is none
    yet); the checkpoint's settings must equal ``cfg``. Without it an existing checkpoint is refused.
    ``precision`` is ``"fp32"``, ``"bf16"`` (autocast, CUDA or CPU) or ``"auto"``: measured on this machine
    (:func:`~smp_diffusion_encoder.training.precision.choose_precision`); the choice and its timings are
    recorded in ``run_dir/config.json``. ``milestones``: steps whose EMA weights are kept for good in
    ``run_dir/milestones/`` (a compute curve). ``command``: the command line, recorded for model cards.
    """
    info = dist_info or init_distributed()
    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT_NAME
    if ckpt.exists() and not resume:
        raise InputFileError(run_dir, "already holds a training run; pass --resume to continue it or "
                             "choose another --out folder")
    if cfg.batch_size % info.world_size:
        raise ConfigError(f"global batch size {cfg.batch_size} is not divisible by {info.world_size} processes")
    store = SliceStore(store_dir)
    preprocessing = store.config
    if preprocessing.image_size != cfg.unet.image_size:
        raise InputFileError(store_dir, f"slices are {preprocessing.image_size} px, the U-Net expects "
                             f"{cfg.unet.image_size} px")
    seed_everything(cfg.seed)
    # channels-last: ~10% faster training steps on CPU (benchmarks/results/train_step.md), NHWC tensor cores on GPU
    model = DiffusionUNet(cfg.unet).to(info.device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = None
    if cfg.warmup_steps:
        warmup = cfg.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    schedule = NoiseSchedule(cfg.schedule, cfg.num_timesteps)
    per_rank = cfg.batch_size // info.world_size
    step_fn = DDPMStep(schedule, seed=cfg.seed, vlb_weight=cfg.vlb_weight, min_snr_gamma=cfg.min_snr_gamma)

    def sampler(start_step: int) -> InfiniteBatchSampler:
        return InfiniteBatchSampler(len(store), per_rank, seed=cfg.seed, rank=info.rank,
                                    world_size=info.world_size, start_step=start_step)

    def batches(start_step: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        # Its own generator: creating the loader must not draw from the global RNG (exact resume).
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + start_step)
        return DataLoader(PositionedDataset(store), batch_sampler=sampler(start_step), num_workers=workers,
                          pin_memory=info.device.type == "cuda", generator=gen)

    state = load_checkpoint(ckpt) if resume and ckpt.exists() else None
    if state is not None:
        check_resumable(ckpt, state["extra"], cfg, preprocessing, sampler(0).position(0))
    choice = None
    if precision == "auto":
        saved = (state or {}).get("extra", {}).get("train", {}).get("precision")
        if saved in ("fp32", "bf16"):  # a resumed run keeps its measured choice: same numerics, exact resume
            precision = saved
        else:
            x0, positions = next(iter(batches(0)))
            choice = choose_precision(model, step_fn, (x0.to(info.device), positions), info.device)
            precision = choice.precision
    train = TrainConfig(max_steps=max_steps, out_dir=str(run_dir), grad_clip=grad_clip,
                        precision=precision,  # type: ignore[arg-type]
                        log_every=log_every, ckpt_every=ckpt_every, seed=cfg.seed, ema_decay=ema_decay,
                        progress=progress, milestones=tuple(milestones))
    old_config = read_json_object(run_dir / RUN_CONFIG) if (run_dir / RUN_CONFIG).is_file() else {}
    run_config = {"format": RUN_FORMAT, "unet": cfg.unet.to_dict(), "preprocessing": preprocessing.to_dict(),
                  "schedule": {"name": cfg.schedule, "num_timesteps": cfg.num_timesteps},
                  "pretrain": cfg.to_dict(), "train": train.to_dict(),
                  "data": {"store": str(Path(store_dir).resolve()), "n_slices": len(store),
                           "volumes": [Path(sh["source"]).name for sh in store.shards]},
                  "command": command or old_config.get("command"),
                  "precision_choice": choice.to_dict() if choice else old_config.get("precision_choice")}

    def extra_state(step: int) -> dict[str, Any]:
        return {"pretrain": cfg.to_dict(), "preprocessing": preprocessing.to_dict(),
                "data": sampler(0).position(step)}

    trainer = Trainer(model, optimizer, step_fn, train, scheduler=scheduler, device=info.device,
                      extra_state=extra_state)
    if state is not None:
        trainer.resume(state)
    if info.is_main:
        for stale in run_dir.glob(".*.tmp-*"):  # left by a writer killed mid-write; never read
            stale.unlink(missing_ok=True)
        atomic_write_json(run_dir / RUN_CONFIG, run_config)
        if choice is not None:
            print(f"precision: {choice.note}", flush=True)
    barrier()

    trainer.fit(batches)
    return trainer


def check_resumable(ckpt: Path, extra: dict[str, Any], cfg: PretrainConfig, preprocessing: PreprocessingConfig,
                    data: dict[str, int]) -> None:
    """Refuse to continue a checkpoint with other settings or data (its data position would mean nothing)."""
    problems = _same_settings(extra.get("pretrain", {}), cfg.to_dict())
    saved_prep = extra.get("preprocessing", extra.get("preprocess"))  # the key's name before 0.2
    if saved_prep is None or PreprocessingConfig.from_dict(saved_prep) != preprocessing:
        problems.append(f"preprocessing: checkpoint {saved_prep!r}, now {preprocessing.to_dict()!r}")
    for key in ("n", "seed", "global_batch_size"):
        if extra.get("data", {}).get(key) != data[key]:
            problems.append(f"data {key}: checkpoint {extra.get('data', {}).get(key)!r}, now {data[key]!r}")
    if problems:
        raise ConfigError(f"{ckpt} cannot be resumed with these settings: " + "; ".join(problems))
