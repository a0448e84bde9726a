"""The one training loop of the project; what a step computes is a swappable object.

A *step* is any callable ``step(model, batch) -> (loss, metrics)``: ``loss`` a scalar tensor to minimize,
``metrics`` a dict of scalars (floats or 0-d tensors) averaged over the log window and written to the CSV.
Diffusion pretraining uses :class:`~smp_diffusion_encoder.training.ddpm.DDPMStep`; few-shot fine-tuning
uses another step with the same :class:`Trainer`.

Per optimizer step: forward under bf16 autocast if asked (CUDA or CPU), backward, optional
gradient-norm clipping, optimizer step, optional LR-scheduler step, EMA update. Every ``log_every`` steps a
row ``step, loss, lr, images_per_s, grad_norm, <step metrics>`` is logged (loss and metrics averaged over
the window and over ranks) with the window's speed: ``step_s``, ``time_s`` (the training clock below),
``tflop_s`` when the FLOPs of a sample are known, ``max_mem_gib`` on CUDA, and ``warmup_s`` (the session's
first step) in a session's first row; every ``ckpt_every`` steps and at the end a checkpoint,
``metrics.csv`` and ``loss.png`` are written atomically to ``out_dir`` (rank 0 only). With
``torch.distributed`` initialized the model is wrapped in ``DistributedDataParallel`` and every rank must run
the same number of steps.

The **training clock** is the wall time of the loop without each session's first step (where
``torch.compile`` compiles and cuDNN autotunes), summed over resumed sessions and checkpointed:
``time_limit_s`` stops a run on it and ``milestone_seconds`` keep weights at points of it. A resumed run's
weights at a given step do not depend on the clock; which step a point of the clock falls on does.

Example:
    >>> trainer = Trainer(model, torch.optim.AdamW(model.parameters()), step, TrainConfig(100, "run"))  # doctest: +SKIP
    >>> trainer.fit(lambda start_step: batches_from(start_step))                                        # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from smp_diffusion_encoder._io import atomic_path
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.training.checkpoint import load_checkpoint, restore_checkpoint, save_checkpoint
from smp_diffusion_encoder.training.curves import plot_training_curves, write_metrics_csv
from smp_diffusion_encoder.training.ema import EMA

CHECKPOINT_NAME = "checkpoint.pt"
MILESTONE_DIR = "milestones"
#: ``loss.png`` is redrawn at a checkpoint at most this often (seconds), and always at the end of a run.
PLOT_EVERY_S = 60.0
Batch = Any


class Step(Protocol):
    """``step(model, batch) -> (loss, metrics)``.

    A step that calls the model's sub-modules itself (not ``model(...)``) bypasses a
    ``DistributedDataParallel`` wrapper, whose gradient all-reduce hooks only fire through its
    ``forward``; such a step sets the class attribute ``calls_submodules = True`` and the Trainer then
    averages gradients over ranks itself after ``backward`` instead of wrapping the model.
    """

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Mapping[str, Any]]: ...


@dataclass(frozen=True)
class TrainConfig:
    """Loop settings (what to train and on which data is the caller's business).

    Attributes:
        max_steps: optimizer steps to reach (a resumed run continues up to it).
        out_dir: where ``checkpoint.pt``, ``metrics.csv`` and ``loss.png`` go.
        grad_clip: max global gradient L2 norm, or ``None`` for no clipping.
        precision: ``"bf16"``: autocast to bfloat16 (fp32 master weights, no grad scaler needed) on CUDA
            and on CPUs; ``"fp32"``: none. :func:`~smp_diffusion_encoder.training.precision.choose_precision`
            picks one by measurement.
        log_every, ckpt_every: in optimizer steps; ``ckpt_every=0`` checkpoints only at the end.
        val_every: call the ``validate`` hook every this many steps (0: never).
        seed: recorded; seeding is done by the caller before the model is built.
        ema_decay: EMA decay or ``None`` for no EMA.
        progress: show a tqdm bar (rank 0).
        milestones: steps (0 = before the first update) at which the weights that would be exported (EMA
            when kept, else the model's) are also saved as ``out_dir/milestones/step-NNNNNNN.safetensors``
            (kept for good, unlike the rolling checkpoint): the points of a compute curve.
        milestone_seconds: points of the training clock (seconds) whose weights are saved the same way, at
            the first step the clock reaches each (files named by that step, the clock in their metadata).
        time_limit_s: stop once the training clock reaches this many seconds (``None``: run to ``max_steps``).
        compile: ``torch.compile`` the model's forward in place (``nn.Module.compile``; its backward is
            compiled with it) after the EMA copy is made; state-dict keys are unchanged.
        flops_per_sample: FLOPs of one training step per sample (forward + backward), to log ``tflop_s``.
        title: title of ``loss.png``.
    """

    max_steps: int
    out_dir: str
    grad_clip: float | None = 1.0
    precision: Literal["fp32", "bf16"] = "fp32"
    log_every: int = 10
    ckpt_every: int = 1000
    val_every: int = 0
    seed: int = 0
    ema_decay: float | None = 0.9999
    progress: bool = True
    milestones: tuple[int, ...] = ()
    milestone_seconds: tuple[float, ...] = ()
    time_limit_s: float | None = None
    compile: bool = False
    flops_per_sample: float | None = None
    title: str = ""

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.max_steps < 1 or self.log_every < 1 or self.ckpt_every < 0 or self.val_every < 0:
            raise ConfigError(f"bad step counts in {self}")
        object.__setattr__(self, "milestones", tuple(sorted({int(m) for m in self.milestones})))
        if any(m < 0 for m in self.milestones):
            raise ConfigError(f"milestones must be steps >= 0, got {self.milestones}")
        object.__setattr__(self, "milestone_seconds", tuple(sorted({float(s) for s in self.milestone_seconds})))
        if any(s < 0 for s in self.milestone_seconds):
            raise ConfigError(f"milestone_seconds must be >= 0, got {self.milestone_seconds}")
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            raise ConfigError(f"time_limit_s must be > 0 or None, got {self.time_limit_s}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        d["milestone_seconds"] = list(self.milestone_seconds)
        return d


class EarlyStopping:
    """Stop when ``metric`` has not improved by ``min_delta`` for ``patience`` validations.

    ``best`` is the best value so far and ``best_step`` the step it was reached at (when the caller passes
    steps, as the :class:`Trainer` does).

    Example:
        >>> stop = EarlyStopping("val_dice", mode="max", patience=2)
        >>> [stop({"val_dice": v}, step) for step, v in enumerate((0.5, 0.6, 0.6, 0.55))]
        [False, False, False, True]
        >>> stop.best, stop.best_step
        (0.6, 1)
    """

    def __init__(
        self, metric: str, *, mode: Literal["min", "max"] = "min", patience: int = 5, min_delta: float = 0.0
    ) -> None:
        self.metric, self.mode, self.patience, self.min_delta = metric, mode, patience, min_delta
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad = 0

    def improves(self, value: float) -> bool:
        """Whether ``value`` would be a new best."""
        return self.best is None or (
            value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        )

    def __call__(self, metrics: Mapping[str, float], step: int | None = None) -> bool:
        value = float(metrics[self.metric])
        if self.improves(value):
            self.best, self.best_step, self.bad = value, step, 0
        else:
            self.bad += 1
        return self.bad >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad = state["best"], int(state["bad"])
        self.best_step = state.get("best_step")


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _batch_size(batch: Batch) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    items = batch.values() if isinstance(batch, dict) else batch
    return _batch_size(next(iter(items)))


class Trainer:
    """Owns the model (DDP-wrapped when distributed), optimizer, scheduler, EMA, history and checkpoints.

    Args:
        model: the bare model, already on ``device``.
        optimizer, scheduler: scheduler is stepped once per optimizer step.
        step: the :class:`Step` computing the loss.
        config: :class:`TrainConfig`.
        extra_state: callable ``step -> dict`` stored under ``"extra"`` in every checkpoint (configs, data
            position).
        validate: hook ``(bare model, ema module or None, step) -> {name: value}`` run on every rank every
            ``val_every`` steps; its values are logged.
        early_stopping: callable ``(metrics, step) -> bool`` (e.g. :class:`EarlyStopping`); rank 0 decides.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        step: Step,
        config: TrainConfig,
        *,
        scheduler: Any = None,
        device: torch.device | str | None = None,
        extra_state: Callable[[int], dict[str, Any]] | None = None,
        validate: Callable[[nn.Module, nn.Module | None, int], Mapping[str, float]] | None = None,
        early_stopping: Callable[[Mapping[str, float], int], bool] | None = None,
    ) -> None:
        self.config, self.step_fn, self.optimizer, self.scheduler = config, step, optimizer, scheduler
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.rank, self.world_size = _rank_world()
        self.bare = model
        self.ema = EMA(model, config.ema_decay) if config.ema_decay is not None else None
        if config.compile:  # after the EMA's deep copy, which stays eager (it is only averaged and saved)
            model.compile()
        self.manual_sync = self.world_size > 1 and bool(getattr(step, "calls_submodules", False))
        if self.manual_sync:
            for t in model.state_dict().values():  # DDP's start-up broadcast, done by hand
                dist.broadcast(t, 0)
        elif self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.model = model
        self.extra_state, self.validate, self.early_stopping = extra_state, validate, early_stopping
        self.use_bf16 = config.precision == "bf16"
        self.global_step = 0
        self.train_seconds = 0.0  # the training clock (module docstring), checkpointed
        self._due_seconds: list[float] = list(config.milestone_seconds)  # clock points not yet saved
        self.history: list[dict[str, Any]] = []
        self._last_plot = -math.inf
        # Metric sums of the current log window (checkpointed, so a resumed run logs the same rows).
        self._window: dict[str, torch.Tensor] = {}
        self._n_window = 0
        self.out_dir = Path(config.out_dir)

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def milestone_path(self, step: int) -> Path:
        """Where the weights of milestone ``step`` go: ``out_dir/milestones/step-NNNNNNN.safetensors``."""
        return self.out_dir / MILESTONE_DIR / f"step-{step:07d}.safetensors"

    def save_milestone(self) -> Path | None:
        """Save the exportable weights (EMA if kept, else the model's) if this step is a milestone step or the
        first step the training clock reached a milestone point at (rank 0)."""
        clock_due = bool(self._due_seconds) and self.train_seconds >= self._due_seconds[0]
        while self._due_seconds and self.train_seconds >= self._due_seconds[0]:
            self._due_seconds.pop(0)
        if (self.global_step not in self.config.milestones and not clock_due) or self.rank != 0:
            return None
        module = self.ema.module if self.ema is not None else self.bare
        state = {
            k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format) for k, v in module.state_dict().items()
        }
        path = self.milestone_path(self.global_step)
        with atomic_path(path) as tmp:
            save_file(
                state,
                str(tmp),
                metadata={
                    "step": str(self.global_step),
                    "weights": "ema" if self.ema is not None else "model",
                    "train_seconds": f"{self.train_seconds:.3f}",
                },
            )
        return path

    # ----- checkpoints -------------------------------------------------------------------------
    def resume(self, source: str | Path | dict[str, Any] | None = None) -> dict[str, Any]:
        """Restore everything from a checkpoint file or loaded state (default ``out_dir/checkpoint.pt``).

        Returns the checkpoint's ``extra`` dict.
        """
        state = source if isinstance(source, dict) else load_checkpoint(source or self.checkpoint_path)
        self.global_step = restore_checkpoint(
            state, model=self.bare, optimizer=self.optimizer, ema=self.ema, scheduler=self.scheduler
        )
        self.history = list(state["history"])
        self.train_seconds = float(state["extra"].get("train_seconds", 0.0))
        self._due_seconds = [s for s in self.config.milestone_seconds if s > self.train_seconds]
        window = state["extra"].get("log_window", {"n": 0, "sums": {}})
        self._n_window = int(window["n"])
        self._window = {k: v.to(self.device) for k, v in window["sums"].items()}
        if self.early_stopping is not None and hasattr(self.early_stopping, "load_state_dict"):
            self.early_stopping.load_state_dict(state["extra"].get("early_stopping", {"best": None, "bad": 0}))
        return state["extra"]

    def save(self, *, plot: bool = False) -> None:
        """Checkpoint + ``metrics.csv`` + ``loss.png`` (rank 0 writes; all ranks wait for it). The figure is
        redrawn at most every :data:`PLOT_EVERY_S` seconds (drawing it costs more than a short run's
        checkpoint), and always with ``plot`` (the end of :meth:`fit`)."""
        if self.rank == 0:
            extra = self.extra_state(self.global_step) if self.extra_state else {}
            extra = {
                **extra,
                "train": self.config.to_dict(),
                "world_size": self.world_size,
                "train_seconds": self.train_seconds,
                "log_window": {"n": self._n_window, "sums": {k: v.cpu() for k, v in self._window.items()}},
            }
            if self.early_stopping is not None and hasattr(self.early_stopping, "state_dict"):
                extra["early_stopping"] = self.early_stopping.state_dict()
            save_checkpoint(
                self.checkpoint_path,
                model=self.bare,
                optimizer=self.optimizer,
                step=self.global_step,
                ema=self.ema,
                scheduler=self.scheduler,
                extra=extra,
                history=self.history,
            )
            write_metrics_csv(self.out_dir / "metrics.csv", self.history)
            self._plot(force=plot)
        if self.world_size > 1:
            dist.barrier()

    def _plot(self, *, force: bool) -> None:
        now = time.monotonic()
        if self.rank == 0 and (force or now - self._last_plot >= PLOT_EVERY_S):
            plot_training_curves(self.out_dir / "loss.png", self.history, title=self.config.title)
            self._last_plot = now

    # ----- the loop ----------------------------------------------------------------------------
    def fit(self, data: Callable[[int], Iterable[Batch]]) -> list[dict[str, Any]]:
        """Train from ``global_step`` to ``max_steps``; ``data(start_step)`` gives the batches from there on.

        Returns the logged history (rows of floats keyed by column name).
        """
        cfg = self.config
        self.model.train()
        images, window_steps, tick = 0, 0, time.perf_counter()
        clock_base, clock_start, session_steps = self.train_seconds, math.nan, 0  # the training clock
        warmup_s: float | None = None  # this session's first step, logged in its first row
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.global_step,
            unit="step",
            desc="train",
            disable=None if cfg.progress and self.rank == 0 else True,  # None: off when not a terminal
            dynamic_ncols=True,
        )
        batches = iter(data(self.global_step))
        stop = cfg.time_limit_s is not None and self.train_seconds >= cfg.time_limit_s
        if self.global_step == 0:
            self.save_milestone()
        try:
            while self.global_step < cfg.max_steps and not stop:
                batch = _to_device(next(batches), self.device)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
                    loss, metrics = self.step_fn(self.model, batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.manual_sync:
                    self._average_gradients()
                clip = cfg.grad_clip if cfg.grad_clip is not None else math.inf  # inf: only measure the norm
                grad_norm = nn.utils.clip_grad_norm_(self.bare.parameters(), clip)
                lr = float(self.optimizer.param_groups[0]["lr"])  # the rate this step used
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                if self.ema is not None:
                    self.ema.update(self.bare)
                self.global_step += 1
                self._n_window += 1
                window_steps += 1
                session_steps += 1
                images += _batch_size(batch) * self.world_size
                for k, v in {"loss": loss, "grad_norm": grad_norm, **metrics}.items():
                    v = torch.as_tensor(v, device=self.device).detach().float()
                    self._window[k] = self._window.get(k, torch.zeros((), device=self.device)) + v
                now = time.perf_counter()
                if session_steps == 1:  # the warm-up step: not on the training clock
                    warmup_s, clock_start = now - tick, now
                self.train_seconds = clock_base + (now - clock_start if session_steps > 1 else 0.0)
                log_now = self.global_step % cfg.log_every == 0 or self.global_step == cfg.max_steps
                time_up = cfg.time_limit_s is not None and self.train_seconds >= cfg.time_limit_s
                if self.world_size > 1:  # ranks' clocks differ: rank 0 decides, at log steps (already a sync)
                    time_up = log_now and self._agree(time_up)
                row: dict[str, Any] = {}
                if log_now or time_up:
                    seconds = max(now - tick, 1e-9)
                    row = self._window_row(lr, images / seconds)
                    row.update(self._speed(seconds / window_steps, row["images_per_s"], warmup_s))
                    images, window_steps, tick, warmup_s = 0, 0, time.perf_counter(), None
                    bar.set_postfix(loss=f"{row['loss']:.4g}", img_s=f"{row['images_per_s']:.1f}")
                stop = stop or time_up
                if cfg.val_every and self.validate is not None and self.global_step % cfg.val_every == 0:
                    val = {
                        k: float(v)
                        for k, v in self.validate(
                            self.bare, self.ema.module if self.ema else None, self.global_step
                        ).items()
                    }
                    self.model.train()
                    row = {"step": self.global_step, **row, **val}
                    if self.early_stopping is not None:
                        stop = self._agree(bool(self.early_stopping(val, self.global_step)))
                if row:
                    self.history.append(row)
                bar.update()
                self.save_milestone()
                if (cfg.ckpt_every and self.global_step % cfg.ckpt_every == 0) or stop:
                    self.save()
            if not (cfg.ckpt_every and self.global_step % cfg.ckpt_every == 0) and not stop:
                self.save(plot=True)
            else:
                self._plot(force=True)
        finally:
            bar.close()
        return self.history

    def _average_gradients(self) -> None:
        """Mean of every existing gradient over ranks (all ranks have the same set: same step logic)."""
        grads = [p.grad for p in self.bare.parameters() if p.grad is not None]
        if grads:
            flat = torch.cat([g.flatten() for g in grads])
            dist.all_reduce(flat)
            flat /= self.world_size
            for g, part in zip(grads, flat.split([g.numel() for g in grads])):
                g.copy_(part.view_as(g))

    def _speed(self, step_s: float, images_per_s: float, warmup_s: float | None) -> dict[str, float]:
        """The speed columns of a logged row (see the module docstring)."""
        speed = {"step_s": step_s, "time_s": self.train_seconds}
        if self.config.flops_per_sample:
            speed["tflop_s"] = self.config.flops_per_sample * images_per_s / 1e12
        if self.device.type == "cuda":
            speed["max_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        if warmup_s is not None:
            speed["warmup_s"] = warmup_s
        return speed

    def _window_row(self, lr: float, images_per_s: float) -> dict[str, Any]:
        keys = sorted(self._window)
        values = torch.stack([self._window[k] for k in keys]) / self._n_window
        self._window, self._n_window = {}, 0
        if self.world_size > 1:
            dist.all_reduce(values)
            values /= self.world_size
        row = {"step": self.global_step, "lr": lr, "images_per_s": images_per_s}
        row.update({k: float(v) for k, v in zip(keys, values.tolist())})
        return row

    def _agree(self, flag: bool) -> bool:
        if self.world_size == 1:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(t, 0)
        return bool(t.item())
