"""Tiny pretraining run folders in the layout the training side writes (see generation/run.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from smp_diffusion_encoder.models import DiffusionUNet


def tiny_unet(seed: int = 0) -> DiffusionUNet:
    """The ``tiny`` preset with seeded, non-default weights (zero-initialized layers made non-zero)."""
    torch.manual_seed(seed)
    net = DiffusionUNet("tiny")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return net.eval()


def write_run(folder: Path, *, ema: bool = True, checkpoint: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """``ema=True``: config.json + ema.safetensors. ``checkpoint=True``: config.json and checkpoint.pt as
    smp_diffusion_encoder.training writes them ("preprocess" key, data dict, EMA.state_dict() under "ema"),
    with DDP-prefixed raw weights that differ from the EMA ones by +1."""
    net = tiny_unet(seed)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "unet": net.config.to_dict(),
        "schedule": {"name": "linear", "num_timesteps": 1000},
        "preprocessing": {"hu_window": [-160.0, 240.0], "image_size": 64},
        "data": "synthetic test phantom",
        "command": "smp-diffusion pretrain ...",
    }
    if checkpoint:
        config["preprocess"] = config.pop("preprocessing")
        config["data"] = {"store": "/data/store", "n_slices": 12}
        del config["command"]
    (folder / "config.json").write_text(json.dumps(config))
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    if ema:
        save_file(sd, str(folder / "ema.safetensors"))
    if checkpoint:
        raw = {"module." + k: v + 1.0 for k, v in sd.items()}
        ema_state = {"decay": 0.9999, "num_updates": 1234, "module": sd}
        torch.save(
            {
                "format": "smp_diffusion_encoder.checkpoint",
                "step": 1234,
                "model": raw,
                "ema": ema_state,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
            },
            folder / "checkpoint.pt",
        )
    return sd
