"""Writing samples: windowed grey PNGs (one grid + one file per sample), a NumPy stack and a NIfTI stack.

Samples are model-space images ``(N, 1, H, W)`` in [-1, 1], i.e. CT windowed with the run's
:class:`~smp_diffusion_encoder.data.preprocessing.PreprocessingConfig` (``-1`` = the window's low end in HU).
Output folder::

    grid.png             all samples tiled, grey 0..255 = the HU window
    png/000000.png ...   one 8-bit PNG per sample (same grey mapping)
    samples.npy          float32 (N, H, W) in [-1, 1]
    samples_hu.nii.gz    float32 HU, slices stacked along z (canonical (Z, Y, X) = (N, H, W); 1 mm voxels,
                         radiological orientation as in :mod:`smp_diffusion_encoder.data.volume`)
    samples.json         how they were made (sampler, steps, seed, source run, preprocessing)

Every file is written atomically.
"""

from __future__ import annotations

import gzip
import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from smp_diffusion_encoder._io import atomic_path, atomic_write_bytes, atomic_write_json
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.errors import ConfigError


def _as_nhw(samples: torch.Tensor | np.ndarray) -> np.ndarray:
    x = samples.detach().float().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples, np.float32)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise ConfigError(f"expected samples (N, 1, H, W) or (N, H, W), got shape {x.shape}")
    return x.astype(np.float32, copy=False)


def to_uint8(samples: torch.Tensor | np.ndarray) -> np.ndarray:
    """[-1, 1] -> grey ``uint8`` ``(N, H, W)`` (values outside are clipped)."""
    x = _as_nhw(samples)
    return np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def to_hu(samples: torch.Tensor | np.ndarray, preprocessing: PreprocessingConfig) -> np.ndarray:
    """[-1, 1] -> HU inside the window ``(N, H, W)`` float32 (inverse of the windowing)."""
    lo, hi = preprocessing.hu_window
    return (lo + (np.clip(_as_nhw(samples), -1.0, 1.0) + 1.0) / 2.0 * (hi - lo)).astype(np.float32)


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile ``(N, H, W)`` images into one ``(rows*(H+pad)+pad, nrow*(W+pad)+pad)`` image (pad value 0)."""
    n, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad), dtype=images.dtype)
    for i, img in enumerate(images):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = img
    return grid


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def save_png_grid(samples: torch.Tensor | np.ndarray, path: str | os.PathLike[str], nrow: int | None = None) -> Path:
    """Write the samples as one grey PNG grid (atomically); returns the path."""
    atomic_write_bytes(path, _png_bytes(make_grid(to_uint8(samples), nrow)))
    return Path(path)


def save_nifti_stack(hu: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write ``(N, H, W)`` float32 HU as a NIfTI volume with canonical ``(Z, Y, X)`` = ``(N, H, W)``.

    File voxel order is ``(x, y, z)`` with affine ``diag(-1, -1, 1)`` (1 mm voxels): column 0 is the
    patient's right, row 0 anterior, as :func:`~smp_diffusion_encoder.data.volume.read_volume` expects.
    """
    data = np.ascontiguousarray(np.transpose(hu, (2, 1, 0)).astype(np.float32))
    img = nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0]))
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        with gzip.GzipFile(tmp, "wb", compresslevel=1, mtime=0) as fh:
            img.to_stream(fh)
    return Path(path)


def save_samples(
    samples: torch.Tensor | np.ndarray,
    out_dir: str | os.PathLike[str],
    preprocessing: PreprocessingConfig,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write every output of the module docstring into ``out_dir``; returns ``{name: path}``."""
    out = Path(out_dir)
    x = _as_nhw(samples)
    grey = to_uint8(x)
    paths = {"grid": save_png_grid(x, out / "grid.png")}
    for i, img in enumerate(grey):
        atomic_write_bytes(out / "png" / f"{i:06d}.png", _png_bytes(img))
    paths["png"] = out / "png"
    with atomic_path(out / "samples.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, x)
    paths["npy"] = out / "samples.npy"
    paths["nifti"] = save_nifti_stack(to_hu(x, preprocessing), out / "samples_hu.nii.gz")
    meta = {
        "num_samples": int(x.shape[0]),
        "image_size": list(x.shape[1:]),
        "preprocessing": preprocessing.to_dict(),
        **dict(metadata or {}),
    }
    atomic_write_json(out / "samples.json", meta)
    paths["metadata"] = out / "samples.json"
    return paths


__all__ = ["make_grid", "save_nifti_stack", "save_png_grid", "save_samples", "to_hu", "to_uint8"]
