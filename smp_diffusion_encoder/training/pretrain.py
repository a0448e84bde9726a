"""DDPM pretraining of the diffusion U-Net on a slice store, single-process or under ``torchrun``.

:func:`prepare_store` turns the user's data (a slice store, a FLARE 2022 root or any folder of CT volumes)
into a slice store whose image size is the U-Net preset's. :func:`run_pretraining` builds model, AdamW,
optional linear LR warm-up, EMA, the :class:`~smp_diffusion_encoder.training.ddpm.DDPMStep` and the
seeded :class:`~smp_diffusion_encoder.training.sampler.InfiniteBatchSampler`, then runs the
:class:`~smp_diffusion_encoder.training.loop.Trainer`; all settings are one
:class:`~smp_diffusion_encoder.training.config.PretrainConfig`. The run folder's layout is
:mod:`~smp_diffusion_encoder.training.run_folder`'s.

``batch_size`` is the **global** batch: under ``torchrun --nproc_per_node=N`` each process takes
``batch_size / N`` samples per step, and the run trains on the same samples with the same noise as a single
process would (see the sampler), so results agree up to floating-point reduction order and a checkpoint can
be resumed at any world size that divides the global batch.

On a GPU nothing in a step waits for the host: the store is held in GPU memory (``preload``) and indexed
there (:func:`~smp_diffusion_encoder.training.sampler.device_batches`), each sample's noise is drawn on the GPU
(``noise_rng``, :func:`~smp_diffusion_encoder.training.ddpm.counter_noise`), steps run under bf16 autocast in
channels-last with cuDNN autotuning, optionally compiled (``compile``), and the logged rows carry
``tflop_s`` (the step's FLOPs counted once, :mod:`~smp_diffusion_encoder.training.throughput`) and
``max_mem_gib``. ``auto`` settings are resolved at the start, recorded under ``runtime`` in the run's
``config.json`` and kept by a resumed run.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.data.slice_store import MANIFEST, SliceStore
from smp_diffusion_encoder.diffusion.gaussian import GaussianDiffusion
from smp_diffusion_encoder.errors import ConfigError, DatasetLayoutError, InputFileError
from smp_diffusion_encoder.models.unet import DiffusionUNet
from smp_diffusion_encoder.training.checkpoint import load_checkpoint
from smp_diffusion_encoder.training.config import PretrainConfig
from smp_diffusion_encoder.training.ddpm import DDPMStep
from smp_diffusion_encoder.training.distributed import DistInfo, barrier, init_distributed
from smp_diffusion_encoder.training.loop import CHECKPOINT_NAME, TrainConfig, Trainer
from smp_diffusion_encoder.training.lr import warmup_cosine
from smp_diffusion_encoder.training.precision import choose_precision
from smp_diffusion_encoder.training.run_folder import RUN_CONFIG_NAME, read_run_config, write_run_config
from smp_diffusion_encoder.training.sampler import InfiniteBatchSampler, PositionedDataset, device_batches
from smp_diffusion_encoder.training.throughput import unet_flops_per_sample

#: ``preload="auto"`` holds the store on a GPU when it takes at most this share of the free GPU memory.
PRELOAD_MAX_SHARE = 0.25


def source_volumes(data: Path, *, include_labeled: bool = False) -> list[Path]:
    """Volumes to pretrain on: a FLARE root's unlabeled images (plus its labeled training images with
    ``include_labeled``), else every volume under ``data`` (a folder), or ``data`` itself (a file)."""
    # Imported here: training on a prepared store needs none of the volume readers (nibabel, pydicom, ...).
    from smp_diffusion_encoder.data.flare import FlareDataset, discover_volumes

    if data.is_file():
        return [data]
    if (data / "Training").is_dir():
        ds = FlareDataset.discover(data)
        return [c.image for c in (*ds.unlabeled, *(ds.labeled if include_labeled else ()))]
    return discover_volumes(data)


def prepare_store(
    data: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    image_size: int,
    *,
    workers: int = 2,
    progress: bool = True,
) -> Path:
    """Return a slice store for ``data`` at ``image_size`` px, building ``run_dir/slices`` if ``data`` is not one.

    A store is built with the default (physical) preprocessing at ``image_size`` (see
    :class:`~smp_diffusion_encoder.data.preprocessing.PreprocessingConfig`); a FLARE root contributes its
    unlabeled images only.

    Raises:
        InputFileError: ``data`` is missing, holds no volumes (checked before anything is created), or is a
            store of another image size / empty. A store this call began is removed when it fails.
    """
    data = Path(data)
    if not data.exists():
        raise DatasetLayoutError(data, "does not exist (expected a slice store, FLARE root or folder of volumes)")
    if (data / MANIFEST).is_file():
        store = data
    else:
        from smp_diffusion_encoder.data.slice_store import build_slice_store

        volumes = source_volumes(data)
        if not volumes:  # refused before anything is created
            raise DatasetLayoutError(
                data,
                "holds no volume to pretrain on (a FLARE root contributes the images of "
                "its Training/*UnlabeledCase* folders only; it has none)",
            )
        store = Path(run_dir) / "slices"
        made = [p for p in (Path(run_dir), store) if not p.exists()]
        try:
            build_slice_store(
                volumes, store, PreprocessingConfig(image_size=image_size), workers=workers, progress=progress
            )
            _check_store(store, image_size)
        except BaseException:
            if made:  # no half-built store (or empty run folder) of this call is left behind
                shutil.rmtree(made[0], ignore_errors=True)
            raise
        return store
    _check_store(store, image_size)
    return store


def _check_store(store: Path, image_size: int) -> None:
    ds = SliceStore(store)
    if ds.config.image_size != image_size:
        raise InputFileError(
            store,
            f"slices are {ds.config.image_size} px but the U-Net is trained at "
            f"{image_size} px (rebuild the store with --image-size {image_size})",
        )
    if len(ds) == 0:
        raise InputFileError(
            store, "the slice store holds no usable slices (every slice was outside the body or unreadable)"
        )


def resolve_runtime(
    config: PretrainConfig, device: torch.device, store_bytes: int, saved: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``auto`` settings resolved for ``device``: ``{"preload": bool, "noise_rng": "cpu" | "device"}``.

    ``saved`` is a checkpoint's record: a resumed run keeps its noise source (a checkpoint written before
    ``noise_rng`` existed drew on the CPU). Preloading does not change what is trained, so it is decided anew.
    """
    noise = config.noise_rng
    if noise == "auto":
        if saved is not None:
            noise = saved.get("noise_rng", "cpu")
        else:
            noise = "device" if device.type == "cuda" else "cpu"
    preload = config.preload == "on"
    if config.preload == "auto" and device.type == "cuda":
        preload = store_bytes <= PRELOAD_MAX_SHARE * torch.cuda.mem_get_info(device)[0]
    return {"preload": preload, "noise_rng": noise}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_pretraining(
    store_dir: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    config: PretrainConfig,
    *,
    command: str | None = None,
    resume: bool = False,
    progress: bool = True,
    dist_info: DistInfo | None = None,
) -> Trainer:
    """Pretrain (or continue) a run in ``run_dir`` on the slice store ``store_dir``; returns the finished Trainer.

    ``resume=True`` continues exactly from ``run_dir/checkpoint.pt`` (or starts afresh if there is none
    yet); the checkpoint's ``fixed`` settings must equal ``config``'s. Without it an existing checkpoint is
    refused. ``config.precision="auto"`` is measured on this machine
    (:func:`~smp_diffusion_encoder.training.precision.choose_precision`) and recorded in the run config; a
    resumed run keeps its recorded choice. ``command`` (the command line) is recorded for model cards.
    """
    info = dist_info or init_distributed()
    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT_NAME
    if ckpt.exists() and not resume:
        raise InputFileError(
            run_dir, "already holds a training run; pass --resume to continue it or choose another --out folder"
        )
    if config.batch_size % info.world_size:
        raise ConfigError(f"global batch size {config.batch_size} is not divisible by {info.world_size} processes")
    store = SliceStore(store_dir)
    preprocessing = store.config
    if preprocessing.image_size != config.unet.image_size:
        raise InputFileError(
            store_dir, f"slices are {preprocessing.image_size} px, the U-Net expects {config.unet.image_size} px"
        )
    seed_everything(config.seed)
    # channels-last: ~10% faster training steps on CPU (benchmarks/results/train_step.md), NHWC tensor cores on GPU
    model = DiffusionUNet(config.unet).to(info.device, memory_format=torch.channels_last)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: each convolution's fastest algorithm, found once
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = None
    if config.warmup_steps:
        warmup = config.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup=warmup))
    per_rank = config.batch_size // info.world_size
    state = load_checkpoint(ckpt) if resume and ckpt.exists() else None
    size = preprocessing.image_size
    runtime = resolve_runtime(
        config,
        info.device,
        len(store) * size * size * 2,
        saved=state["extra"].get("runtime", {}) if state is not None else None,
    )
    step_fn = DDPMStep(
        GaussianDiffusion(config.noise_schedule),
        seed=config.seed,
        vlb_weight=config.vlb_weight,
        min_snr_gamma=config.min_snr_gamma,
        noise_rng=runtime["noise_rng"],
    )
    on_device = store.load_all().to(info.device) if runtime["preload"] else None

    def sampler(start_step: int) -> InfiniteBatchSampler:
        return InfiniteBatchSampler(
            len(store), per_rank, seed=config.seed, rank=info.rank, world_size=info.world_size, start_step=start_step
        )

    def batches(start_step: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        if on_device is not None:
            return device_batches(on_device, sampler(start_step))
        # Its own generator: creating the loader must not draw from the global RNG (exact resume).
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + start_step)
        return DataLoader(
            PositionedDataset(store),
            batch_sampler=sampler(start_step),
            num_workers=config.workers,
            pin_memory=info.device.type == "cuda",
            generator=gen,
        )

    if state is not None:
        check_resumable(ckpt, state["extra"], config, preprocessing, sampler(0).position(0))
    if info.device.type == "cuda":  # counting needs torch._dynamo (4 s to import): only where TFLOP/s matter
        runtime["flops_per_sample"] = unet_flops_per_sample(model, step_fn, size)
    precision, choice = config.precision, None
    if precision == "auto":
        saved = (state or {}).get("extra", {}).get("train", {}).get("precision")
        if saved in ("fp32", "bf16"):  # a resumed run keeps its measured choice: same numerics, exact resume
            precision = saved
        else:
            x0, positions = next(iter(batches(0)))
            choice = choose_precision(model, step_fn, (x0.to(info.device), positions), info.device)
            precision = choice.precision
    train = TrainConfig(
        max_steps=config.steps,
        out_dir=str(run_dir),
        grad_clip=config.grad_clip,
        precision=precision,  # type: ignore[arg-type]
        log_every=config.log_every,
        ckpt_every=config.ckpt_every,
        seed=config.seed,
        ema_decay=config.ema_decay,
        progress=progress,
        milestones=config.milestones,
        milestone_seconds=tuple(60 * m for m in config.milestone_minutes),
        time_limit_s=None if config.max_minutes is None else 60 * config.max_minutes,
        compile=config.compile,
        flops_per_sample=runtime.get("flops_per_sample"),
    )

    def extra_state(step: int) -> dict[str, Any]:
        return {
            "pretrain": config.to_dict(),
            "preprocessing": preprocessing.to_dict(),
            "data": sampler(0).position(step),
            "runtime": runtime,
        }

    trainer = Trainer(
        model, optimizer, step_fn, train, scheduler=scheduler, device=info.device, extra_state=extra_state
    )
    if state is not None:
        trainer.resume(state)
    if info.is_main:
        for stale in run_dir.glob(".*.tmp-*"):  # left by a writer killed mid-write; never read
            stale.unlink(missing_ok=True)
        old = read_run_config(run_dir / RUN_CONFIG_NAME) if (run_dir / RUN_CONFIG_NAME).is_file() else {}
        data = {
            "store": str(Path(store_dir).resolve()),
            "n_slices": len(store),
            "volumes": [Path(sh["source"]).name for sh in store.shards],
        }
        device_name = torch.cuda.get_device_name(info.device) if info.device.type == "cuda" else "cpu"
        write_run_config(
            run_dir,
            config,
            train,
            preprocessing,
            data,
            command=command or old.get("command"),
            precision_choice=choice.to_dict() if choice else old.get("precision_choice"),
            runtime={
                **runtime,
                "compile": config.compile,
                "device": device_name,
                "world_size": info.world_size,
                "torch": torch.__version__,
            },
        )
        if choice is not None:
            print(f"precision: {choice.note}", flush=True)
    barrier()
    trainer.fit(batches)
    return trainer


def check_resumable(
    ckpt: Path, extra: dict[str, Any], config: PretrainConfig, preprocessing: PreprocessingConfig, data: dict[str, int]
) -> None:
    """Refuse to continue a checkpoint with other settings or data (its data position would mean nothing)."""
    problems = config.resume_problems(extra.get("pretrain", {}))
    saved_prep = extra.get("preprocessing", extra.get("preprocess"))  # the key's name before 0.2
    if saved_prep is None or PreprocessingConfig.from_dict(saved_prep) != preprocessing:
        problems.append(f"preprocessing: checkpoint {saved_prep!r}, now {preprocessing.to_dict()!r}")
    for key in ("n", "seed", "global_batch_size"):
        if extra.get("data", {}).get(key) != data[key]:
            problems.append(f"data {key}: checkpoint {extra.get('data', {}).get(key)!r}, now {data[key]!r}")
    if problems:
        raise ConfigError(f"{ckpt} cannot be resumed with these settings: " + "; ".join(problems))
