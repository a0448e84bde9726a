"""Generation metrics between two image sets on disk (real slices vs samples).

An image set is any of:

- a slice store folder (``manifest.json``, :class:`~smp_diffusion_encoder.data.slice_store.SliceStore`);
- a sample folder written by ``smp-diffusion sample`` (``samples.npy``);
- a ``.npy`` file ``(N, H, W)`` or ``(N, 1, H, W)`` in [-1, 1];
- a folder of 8-bit grey PNGs (0..255 -> [-1, 1], the mapping of
  :func:`~smp_diffusion_encoder.generation.outputs.to_uint8`).

``max_images`` draws a seeded random subset (a real slice store holds ~200k slices; the paper's protocol
compares equal numbers, typically 10k-50k).

Example:
    >>> m = evaluate_generation("store", "samples/", inception_weights="inception_v3_google-0cc3c7bd.pth",
    ...                         max_images=10_000)                         # doctest: +SKIP
    >>> m["fid"], m["sfid"], m["precision"], m["recall"], m["f1"]       # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from smp_diffusion_encoder.errors import DatasetLayoutError, InputFileError
from smp_diffusion_encoder.generation.inception import extract_features, load_inception, weights_sha256
from smp_diffusion_encoder.generation.metrics import generation_metrics


class ImageSet:
    """Images ``(1, H, W)`` float32 in [-1, 1] from one of the sources of the module docstring."""

    def __init__(self, path: str | os.PathLike[str], max_images: int | None = None, seed: int = 0) -> None:
        self.path = p = Path(path)
        self._array: np.ndarray | None = None
        self._pngs: list[Path] = []
        self._store = None
        if p.is_dir() and (p / "manifest.json").is_file():
            from smp_diffusion_encoder.data.slice_store import SliceStore

            self._store = SliceStore(p)
            n = len(self._store)
        elif p.is_dir() and (p / "samples.npy").is_file():
            self._array = np.load(p / "samples.npy", mmap_mode="r")
        elif p.is_file() and p.suffix == ".npy":
            self._array = np.load(p, mmap_mode="r")
        elif p.is_dir():
            self._pngs = sorted(p.glob("*.png"))
            if not self._pngs:
                raise DatasetLayoutError(p, "holds no slice store (manifest.json), samples.npy or *.png images")
        else:
            raise InputFileError(p, "does not exist or is not an image set (.npy file or folder)")
        if self._array is not None:
            if self._array.ndim == 4 and self._array.shape[1] == 1:
                self._array = self._array[:, 0]
            if self._array.ndim != 3:
                raise InputFileError(p, f"array is {self._array.shape}, expected (N, H, W) or (N, 1, H, W)")
            n = len(self._array)
        elif self._pngs:
            n = len(self._pngs)
        self.indices = np.arange(n)
        if max_images is not None and max_images < n:
            self.indices = np.sort(np.random.default_rng(seed).choice(n, size=max_images, replace=False))
        if len(self.indices) < 2:
            raise DatasetLayoutError(p, f"holds {len(self.indices)} image(s); the metrics need at least 2")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        j = int(self.indices[i])
        if self._store is not None:
            return self._store[j].float()
        if self._array is not None:
            return torch.from_numpy(np.array(self._array[j], dtype=np.float32))[None]
        grey = np.asarray(Image.open(self._pngs[j]).convert("L"), dtype=np.float32)
        return torch.from_numpy(grey / 127.5 - 1.0)[None]

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Batches ``(B, 1, H, W)``; all images of a batch must share their size."""
        for start in range(0, len(self), batch_size):
            yield torch.stack([self[i] for i in range(start, min(start + batch_size, len(self)))])


def evaluate_generation(
    real: str | os.PathLike[str],
    fake: str | os.PathLike[str],
    *,
    inception_weights: str | os.PathLike[str] | None = None,
    max_images: int | None = None,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """FID, sFID, precision, recall, F1 (see :mod:`~smp_diffusion_encoder.generation.metrics`) and provenance.

    Raises :class:`~smp_diffusion_encoder.errors.WeightsError` (before reading any image) when no
    Inception weights file is given.
    """
    model = load_inception(inception_weights)
    real_set, fake_set = ImageSet(real, max_images, seed), ImageSet(fake, max_images, seed)
    real_pool, real_spatial = extract_features(model, real_set.batches(batch_size), device=device)
    fake_pool, fake_spatial = extract_features(model, fake_set.batches(batch_size), device=device)
    metrics = generation_metrics(real_pool, real_spatial, fake_pool, fake_spatial)
    return {
        **metrics.to_dict(),
        "num_real": len(real_set),
        "num_fake": len(fake_set),
        "real": str(real),
        "fake": str(fake),
        "inception_weights_sha256": weights_sha256(inception_weights),
    }


__all__ = ["ImageSet", "evaluate_generation"]
