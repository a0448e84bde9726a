"""Training checkpoints that lose nothing, written atomically.

A checkpoint is one ``torch.save`` file holding plain containers of tensors, numbers and strings:

===============  =============================================================================
key              content
===============  =============================================================================
``format``       ``"smp_diffusion_encoder.checkpoint"`` and ``version``
``step``         optimizer steps done
``model``        state dict of the bare model (never the ``DistributedDataParallel`` wrapper)
``ema``          :meth:`EMA.state_dict` or ``None``
``optimizer``    ``optimizer.state_dict()``
``scheduler``    LR scheduler state or ``None``
``scaler``       ``torch.amp.GradScaler`` state or ``None`` (bf16 and fp32 need none)
``rng``          Python, NumPy, torch CPU and every CUDA device's generator states
``extra``        caller state: configs, data position (:meth:`InfiniteBatchSampler.position`), ...
``history``      the metric rows logged so far (the CSV and curve continue seamlessly)
===============  =============================================================================

Writing goes through :func:`~smp_diffusion_encoder._io.atomic_path` (temporary file, fsync, ``os.replace``):
a reader sees the previous checkpoint or the new one, never a half-written file, even if the writer is
SIGKILLed. Loading uses ``torch.load(weights_only=True)``: only tensors and plain containers are accepted,
no pickled code, and ``--resume`` only ever reads checkpoints this program wrote. RNG states are stored as
tensors/lists for that reason.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from smp_diffusion_encoder._io import atomic_path
from smp_diffusion_encoder.errors import ConfigError, CorruptFileError, InputFileError
from smp_diffusion_encoder.training.ema import EMA

CHECKPOINT_FORMAT = "smp_diffusion_encoder.checkpoint"
CHECKPOINT_VERSION = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a ``DistributedDataParallel`` (or ``torch.compile``) wrapper."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def rng_state() -> dict[str, Any]:
    """Every random generator a training step may touch, in ``weights_only``-loadable form."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    return {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state` (CUDA states are restored when the device count matches)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": npst["bit_generator"],
            "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": npst["pos"]},
            "has_gauss": npst["has_gauss"],
            "gauss": npst["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    ema: EMA | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    extra: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> Path:
    """Write a complete checkpoint atomically to ``path`` and return it."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "step": int(step),
        "model": unwrap(model).state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "extra": extra or {},
        "history": history or [],
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU).

    Raises:
        InputFileError: the file is missing or was not written by this program.
        CorruptFileError: it cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "no checkpoint here")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        raise CorruptFileError(path, f"cannot read the checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputFileError(path, f"is not a {CHECKPOINT_FORMAT} file")
    if state.get("version") != CHECKPOINT_VERSION:
        raise InputFileError(path, f"unsupported checkpoint version {state.get('version')!r}")
    return state


def restore_checkpoint(
    state: dict[str, Any],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema: EMA | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    restore_rng: bool = True,
) -> int:
    """Load ``state`` into the given objects (strictly) and return the step to continue from."""
    unwrap(model).load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    for name, obj in (("ema", ema), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None:
            if state[name] is None:
                raise ConfigError(f"the checkpoint has no {name} state but this run uses one")
            obj.load_state_dict(state[name])
    if restore_rng:
        set_rng_state(state["rng"])
    return int(state["step"])
