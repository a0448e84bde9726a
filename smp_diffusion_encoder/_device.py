"""One device rule for every command: ``auto`` (the default) is CUDA when available, else the CPU."""

from __future__ import annotations

import torch

from smp_diffusion_encoder.errors import ConfigError


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
