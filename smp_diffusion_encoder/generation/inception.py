"""Inception-V3 features for the generation metrics, from a weights file the user provides.

Nothing is downloaded: the network is torchvision's ``inception_v3(weights=None, aux_logits=False,
init_weights=False)`` and its weights come only from ``weights`` (argument / ``--inception-weights``) or
the environment variable ``SMP_DIFFUSION_INCEPTION``. Accepted files: ``.safetensors``, or a torchvision
``.pth`` / ``.pt`` state dict read with ``torch.load(weights_only=True)`` (no code is unpickled). The
``AuxLogits.*`` and ``fc.*`` tensors are ignored (neither is used); every other tensor must match.

Get torchvision's ImageNet weights once on a machine with internet access:
``https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth`` (the file torchvision's
``Inception_V3_Weights.IMAGENET1K_V1`` downloads). guided-diffusion's evaluator runs the 2015 TensorFlow
graph instead, so absolute numbers are close to, not identical with, published ones; compare runs only
with the same weights file (its SHA-256 is recorded by :func:`weights_sha256`).

Features (guided-diffusion's): ``pool`` = the 2048-d global average pool; ``spatial`` = the first 7
channels of ``mixed_6/conv`` (TF's name for the 1x1 branch of torchvision's ``Mixed_6d``, post-ReLU,
17x17 at 299 px), flattened in TF's ``(H, W, C)`` order: 2023-d.

Example:
    >>> net = load_inception("inception_v3_google-0cc3c7bd.pth")            # doctest: +SKIP
    >>> pool, spatial = net(torch.zeros(4, 1, 256, 256))                       # doctest: +SKIP
    >>> pool.shape, spatial.shape                                              # doctest: +SKIP
    (torch.Size([4, 2048]), torch.Size([4, 2023]))
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception_v3

from smp_diffusion_encoder.errors import WeightsError

ENV_VAR = "SMP_DIFFUSION_INCEPTION"
TORCHVISION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
INPUT_SIZE = 299
SPATIAL_CHANNELS = 7
_IGNORED_PREFIXES = ("AuxLogits.", "fc.")


def resolve_inception_weights(weights: str | os.PathLike[str] | None = None) -> Path:
    """The weights file from ``weights`` or ``$SMP_DIFFUSION_INCEPTION``; :class:`WeightsError` if none exists."""
    given = weights if weights is not None else os.environ.get(ENV_VAR) or None
    how = "--inception-weights" if weights is not None else f"${ENV_VAR}"
    if given is None or not Path(given).is_file():
        problem = "no Inception-V3 weights given" if given is None else f"{how}={given} is not a file"
        raise WeightsError(
            f"{problem}. The generation metrics need torchvision's ImageNet Inception-V3 weights as a local file "
            f"(they are never downloaded): fetch {TORCHVISION_URL} (inception_v3_google-0cc3c7bd.pth) on a machine "
            f"with internet access, then pass --inception-weights PATH or set {ENV_VAR}=PATH (.pth or .safetensors)"
        )
    return Path(given)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, or a pickle holding more than tensors
        raise WeightsError(f"{path}: unreadable Inception weights ({type(err).__name__}: {err})") from err
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return {k: v for k, v in sd.items() if not k.startswith(_IGNORED_PREFIXES)}


class InceptionFeatures(nn.Module):
    """Grey images ``(B, 1, H, W)`` (or ``(B, 3, H, W)``) in [-1, 1] -> ``(pool (B, 2048), spatial (B, 2023))``.

    Grey inputs are repeated on 3 channels, then resized to 299x299 (bilinear); torchvision's Google
    weights expect [-1, 1] inputs, so no further normalization is applied (``transform_input=False``).
    """

    def __init__(self, state_dict: dict[str, torch.Tensor] | None = None, *, source: str = "weights") -> None:
        super().__init__()
        net = inception_v3(weights=None, aux_logits=False, init_weights=False)
        net.fc = nn.Identity()
        if state_dict is not None:
            try:
                net.load_state_dict(state_dict, strict=True)
            except RuntimeError as err:
                raise WeightsError(f"{source}: not torchvision Inception-V3 weights ({str(err)[:500]})") from err
        self.net = net.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        n = self.net
        for layer in (
            n.Conv2d_1a_3x3,
            n.Conv2d_2a_3x3,
            n.Conv2d_2b_3x3,
            n.maxpool1,
            n.Conv2d_3b_1x1,
            n.Conv2d_4a_3x3,
            n.maxpool2,
            n.Mixed_5b,
            n.Mixed_5c,
            n.Mixed_5d,
            n.Mixed_6a,
            n.Mixed_6b,
            n.Mixed_6c,
        ):
            x = layer(x)
        branches = n.Mixed_6d._forward(x)  # [branch1x1 (= TF mixed_6/conv), 7x7, 7x7dbl, pool]
        spatial = branches[0][:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1)  # TF (H, W, C) order
        x = torch.cat(branches, 1)
        for layer in (n.Mixed_6e, n.Mixed_7a, n.Mixed_7b, n.Mixed_7c, n.avgpool):
            x = layer(x)
        return x.flatten(1), spatial


def load_inception(weights: str | os.PathLike[str] | None = None) -> InceptionFeatures:
    """:class:`InceptionFeatures` with weights from ``weights`` or ``$SMP_DIFFUSION_INCEPTION`` (see module doc)."""
    path = resolve_inception_weights(weights)
    return InceptionFeatures(_read_state_dict(path), source=str(path))


def weights_sha256(weights: str | os.PathLike[str] | None = None) -> str:
    """SHA-256 of the Inception weights file in use (record it next to the metrics)."""
    digest = hashlib.sha256()
    with open(resolve_inception_weights(weights), "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@torch.no_grad()
def extract_features(
    model: InceptionFeatures,
    images: torch.Tensor | np.ndarray | Iterable[torch.Tensor],
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """``(pool (N, 2048), spatial (N, 2023))`` float64 for images ``(N, 1, H, W)`` / ``(N, H, W)`` in [-1, 1]
    (or an iterable of such batches)."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        x = torch.as_tensor(images, dtype=torch.float32)
        x = x[:, None] if x.dim() == 3 else x
        batches: Iterable[torch.Tensor] = x.split(batch_size)
    else:
        batches = images
    model = model.to(device).eval()
    pools, spatials = [], []
    for b in batches:
        b = b[:, None] if b.dim() == 3 else b
        pool, spatial = model(b.to(device, torch.float32))
        pools.append(pool.double().cpu().numpy())
        spatials.append(spatial.double().cpu().numpy())
    return np.concatenate(pools), np.concatenate(spatials)


__all__ = [
    "ENV_VAR",
    "InceptionFeatures",
    "TORCHVISION_URL",
    "extract_features",
    "load_inception",
    "resolve_inception_weights",
    "weights_sha256",
]
