"""One device rule and one precision rule for every command.

* Device: ``auto`` (the default) is CUDA when available, else the CPU.
* Precision of inference and fine-tuning: ``auto`` (the default) runs under bfloat16 autocast where the device
  has native bf16 arithmetic (CUDA devices that support it; CPUs whose oneDNN reports bf16 kernels, i.e.
  AVX512-BF16 or AMX) and in float32 elsewhere (bf16 emulated in software is slower than fp32). Weights
  stay float32; outputs are cast back to float32. On a 2-core AMD EPYC with AVX512-BF16 the frozen
  encoder's features are 2.0x faster, a decoder training step and a resnet34 Unet step 1.5x
  (``benchmarks/results/precision.md``). Pretraining measures its own choice
  (:mod:`smp_diffusion_encoder.training.precision`).
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch

from smp_diffusion_encoder._options import PRECISIONS, Precision  # noqa: F401  (re-exported: _device.Precision)
from smp_diffusion_encoder.errors import ConfigError

#: What runs (:func:`resolve_precision` of a :data:`Precision` a caller asks for).
ResolvedPrecision = Literal["fp32", "bf16"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``, ``"cpu"`` or ``"cuda[:i]"`` -> ``torch.device``; CUDA without a GPU is a :class:`ConfigError`.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"device must be auto, cpu or cuda[:index], got {device!r}") from err
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda[:index], got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but torch.cuda.is_available() is False")
    return dev


def describe_machine(device: str = "cpu") -> str:
    """One line naming the CPU model (``/proc/cpuinfo``), core and thread counts, torch and the GPU if used: the
    machine recorded beside every timing and figure (these CPUs differ between sessions)."""
    cpu = platform.processor() or platform.machine() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if (str(device) == "auto" or str(device).startswith("cuda")) and torch.cuda.is_available():  # auto picks CUDA
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 or AMX); else bf16 is emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def resolve_precision(precision: str, device: torch.device) -> ResolvedPrecision:
    """``"auto"`` -> ``"bf16"`` where ``device`` has native bf16 arithmetic, else ``"fp32"`` (see the module
    docstring); ``"fp32"`` and ``"bf16"`` are kept (bf16 then runs even where it is emulated).

    Example:
        >>> resolve_precision("fp32", torch.device("cpu"))
        'fp32'
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision  # type: ignore[return-value]
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """bfloat16 autocast on ``device`` when ``precision`` resolves to ``"bf16"``, else nothing."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_precision(precision, device) == "bf16"):
        yield
