"""Features of labeled slices, computed once with a frozen encoder and reused across epochs and heads.

With the encoder frozen, its features of a given slice never change, so every head (linear probe, MLP
ensemble, smp decoder) can train on cached features instead of re-running the U-Net each epoch. Entries
are the encoder's maps at native resolution (one per stride), stored as float16 (half the memory; the
relative error, ~1e-3, is far below the variation a head learns from).

Key = encoder identity + slice identity:

* encoder identity (:func:`encoder_fingerprint`): SHA-256 over the encoder's class, its feature
  configuration (timesteps, blocks, noise seed, ...), strides/channels, and every tensor of its state
  dict. Changing a weight, a timestep or the noise seed gives a different key.
* slice identity: the caller's ``slice_id`` (e.g. ``"FLARE22_Tr_0001:42"``) plus a SHA-1 of the input
  slice itself, so a slice preprocessed differently (other HU window or size) never hits a stale entry.

Storage: always in memory; with ``directory``, also on disk as one ``.safetensors`` file per slice under
``directory/<encoder key[:16]>/`` (``<encoder key[:16]>-bf16/`` for features computed under bf16 autocast;
written atomically; a damaged file is recomputed, never returned).

Example:
    >>> enc = DiffusionFeatureEncoder(DiffusionUNet("tiny"), FeatureConfig(timesteps=(50,)))  # doctest: +SKIP
    >>> cache = FeatureCache(enc, directory="runs/feature-cache")                           # doctest: +SKIP
    >>> maps = cache.features(["case1:10", "case1:20"], slices)   # [(2, C_s, H/s, W/s)] float16  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from smp_diffusion_encoder._device import Precision, autocast, resolve_precision
from smp_diffusion_encoder._io import atomic_path


def encoder_fingerprint(encoder: nn.Module) -> str:
    """64-hex SHA-256 identifying what ``encoder`` computes (class, feature config, shapes, all weights)."""
    h = hashlib.sha256()
    features = getattr(encoder, "features", None)
    meta = {
        "class": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
        "features": features.to_dict() if hasattr(features, "to_dict") else None,
        "strides": list(getattr(encoder, "strides", ())),
        "channels": list(getattr(encoder, "channels", ())),
        "output_stride": getattr(encoder, "output_stride_cap", None),
        "depth": getattr(encoder, "depth", None),
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    for name, t in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


class FeatureCache:
    """Cache of an encoder's native-resolution feature maps, per slice.

    Args:
        encoder: a frozen encoder ``(B, 1, H, W) -> [(B, C_s, H/s, W/s)]`` (e.g. ``DiffusionFeatureEncoder``
            or an smp ``DDPMEncoder``); it is run in eval mode under ``torch.inference_mode``.
        directory: optional folder for the on-disk copy.
        dtype: storage dtype (default float16).
        encoder_key: precomputed :func:`encoder_fingerprint` (skips hashing a large model).
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"auto"`` (see :mod:`smp_diffusion_encoder._device`):
            the encoder runs under bf16 autocast when it resolves to ``"bf16"``.

    ``hits`` / ``misses`` count slices served from the cache (memory or disk) / computed.
    """

    def __init__(
        self,
        encoder: nn.Module,
        directory: str | os.PathLike[str] | None = None,
        *,
        dtype: torch.dtype = torch.float16,
        encoder_key: str | None = None,
        precision: Precision = "fp32",
    ) -> None:
        self.encoder = encoder
        self.encoder_key = encoder_key or encoder_fingerprint(encoder)
        self.precision = resolve_precision(precision, next(encoder.parameters()).device)
        folder = self.encoder_key[:16] + ("-bf16" if self.precision == "bf16" else "")
        self.directory = None if directory is None else Path(directory) / folder
        self.dtype = dtype
        self._memory: dict[str, list[torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._memory)

    @staticmethod
    def slice_key(slice_id: str, image: torch.Tensor) -> str:
        """Key of one slice: SHA-1 over ``slice_id`` and the slice's shape, dtype and bytes."""
        h = hashlib.sha1(slice_id.encode())
        h.update(str((tuple(image.shape), str(image.dtype))).encode())
        h.update(_tensor_bytes(image))
        return h.hexdigest()

    def features(self, slice_ids: Sequence[str], images: torch.Tensor, *, batch_size: int = 8) -> list[torch.Tensor]:
        """Maps for ``images`` ``(N, 1, H, W)`` named ``slice_ids``: ``[(N, C_s, H/s, W/s)]`` in ``self.dtype``.

        Cached slices are read back; the others are encoded in batches of ``batch_size`` and stored.
        """
        if len(slice_ids) != images.shape[0]:
            raise ValueError(f"{len(slice_ids)} slice ids for {images.shape[0]} images")
        keys = [self.slice_key(s, images[i]) for i, s in enumerate(slice_ids)]
        entries: list[list[torch.Tensor] | None] = [self._lookup(k) for k in keys]
        todo = [i for i, e in enumerate(entries) if e is None]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        for start in range(0, len(todo), batch_size):
            idx = todo[start : start + batch_size]
            for i, maps in zip(idx, self._encode(images[idx])):
                self._store(keys[i], slice_ids[i], maps)
                entries[i] = maps
        return [torch.stack([e[s] for e in entries if e is not None]) for s in range(len(entries[0] or []))]

    def _encode(self, images: torch.Tensor) -> list[list[torch.Tensor]]:
        """``(n, 1, H, W)`` -> per image, its maps ``[(C_s, h_s, w_s)]`` in the storage dtype on the CPU."""
        device = next(self.encoder.parameters()).device
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            with torch.inference_mode(), autocast(device, self.precision):
                maps = self.encoder(images.to(device))
        finally:
            self.encoder.train(was_training)
        return [[m[j].to("cpu", self.dtype).contiguous() for m in maps] for j in range(images.shape[0])]

    def _lookup(self, key: str) -> list[torch.Tensor] | None:
        if key in self._memory:
            return self._memory[key]
        if self.directory is None:
            return None
        path = self.directory / f"{key}.safetensors"
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
            maps = [tensors[f"stride_{i}"] for i in range(len(tensors))]
        except (SafetensorError, KeyError, OSError):  # damaged or foreign file: recompute and overwrite
            return None
        self._memory[key] = maps
        return maps

    def _store(self, key: str, slice_id: str, maps: list[torch.Tensor]) -> None:
        self._memory[key] = maps
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.directory / f"{key}.safetensors") as tmp:
            save_file(
                {f"stride_{i}": m for i, m in enumerate(maps)},
                str(tmp),
                metadata={"slice_id": slice_id, "encoder": self.encoder_key},
            )


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """Raw bytes of ``t`` in row-major order, whatever its memory format (e.g. channels-last)."""
    flat = t.detach().to("cpu").clone(memory_format=torch.contiguous_format).reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()
