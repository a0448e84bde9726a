"""How unsure a segmentation model is about each axial slice: one number per slice.

All measures are computed on the model's own slices (its preprocessing: HU window, pixel spacing, size), so a
pixel has the same area on every scan (3 mm x 3 mm = 0.09 cm² for the default ``ddpm-ct`` preprocessing) and
scores of different scans compare. With ``p`` the softmax of the model at a pixel, the first three measures are
areas (cm² of the slice), the fourth a Dice loss:

* ``"error"``: expected wrong area, ``sum over pixels of (1 - max_k p_k)`` x pixel area: the area of the slice
  the model itself expects to have labeled wrongly (one forward pass);
* ``"entropy"``: ``sum of -sum_k p_k log p_k`` x pixel area (nats x cm²; one forward pass);
* ``"tta"``: disagreement under test-time augmentation: the slice is also shown shifted by a few pixels and
  with its contrast and brightness changed a little (``views`` views in all, seeded); each view's prediction is
  shifted back, and a pixel counts by the share of views that do not vote with the majority
  (``views`` forward passes);
* ``"dice"``: expected Dice loss, unitless in [0, 1]: for each organ ``c`` the model sees on the slice (soft mass
  ``sum p_c`` of at least one pixel, or any pixel predicted ``c``), ``1 - 2 sum(p_c h_c) / (sum p_c + sum h_c)``
  with ``h_c`` the predicted mask: one minus the Dice the prediction would score if the truth were drawn from
  ``p``; averaged over those organs, as a slice's DSC averages its organs (one forward pass). The area measures
  rank slices by how much tissue is wrong, so a large organ's border outweighs a small organ missed; this one
  weighs every organ on the slice equally, like the DSC the benchmarks report. Slices with no organ score 0.

Every measure also gives, per slice, the organs whose pixels hold most of the uncertainty (the model's two most
likely classes at each pixel share its uncertainty), for the "why" of a suggestion.

Which measure tracks the real error best is measured, not assumed: ``benchmarks/labeling_loop.py`` reports the
rank correlation between each measure and the slices' true error on realct.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from smp_diffusion_encoder._device import autocast, resolve_device, resolve_precision
from smp_diffusion_encoder.data.preprocessing import SliceGeometry
from smp_diffusion_encoder.data.volume import Volume
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.inference.model_dir import Segmenter
from smp_diffusion_encoder.labeling.config import MEASURES, Measure

#: Unit of each measure's per-slice score (what suggest prints beside it).
UNITS: dict[str, str] = {"error": "cm²", "entropy": "nats x cm²", "tta": "cm²", "dice": "Dice loss"}
#: An organ counts on a slice for the ``dice`` measure from this soft mass (pixels) on, or if predicted there.
DICE_MIN_PIXELS = 1.0
#: Largest shift (model pixels) of a test-time augmentation view; contrast and brightness change by up to 10%.
TTA_MAX_SHIFT = 4


@dataclass(frozen=True)
class SliceUncertainty:
    """What a model makes of some slices of one scan (model space, ``S x S`` pixels).

    Attributes:
        images: ``(N, S, S)`` model input in [-1, 1].
        labels: ``(N, S, S)`` predicted ids (argmax of the mean probabilities).
        maps: ``(N, S, S)`` per-pixel uncertainty of the measure (unitless; sums to ``scores`` / pixel area for
            the area measures, to ``scores`` for ``dice``: each pixel's part of the slice's Dice loss).
        scores: ``(N,)`` the measure per slice, in :data:`UNITS`.
        organ_share: ``(N, K)`` each class's share of the slice's uncertainty (rows sum to 1, or 0 when certain).
        pixel_area_cm2: area of one model pixel.
    """

    images: np.ndarray
    labels: np.ndarray
    maps: np.ndarray
    scores: np.ndarray
    organ_share: np.ndarray
    pixel_area_cm2: float


def model_slices(model: Segmenter, volume: Volume, zs: Sequence[int]) -> tuple[np.ndarray, SliceGeometry]:
    """Slices ``zs`` of a canonical HU volume as the model sees them: ``(N, S, S)`` in [-1, 1], and the layout."""
    geometry = SliceGeometry.of(volume, model.preprocessing)
    index = np.asarray(list(zs), dtype=np.int64)
    chosen = dataclasses.replace(volume, array=volume.array[index])
    return geometry.image_slices(chosen, model.preprocessing), geometry


def pixel_area_cm2(model: Segmenter, volume: Volume) -> float:
    """Area of one model pixel in cm² (physical preprocessing: ``spacing_mm²``; legacy: the slice's field of view
    over the image size, squared)."""
    prep = model.preprocessing
    if prep.spacing_mm is not None:
        side_mm = float(prep.spacing_mm)  # type: ignore[arg-type]
    else:
        _, h, w = volume.array.shape
        side_mm = max(h * volume.spacing[1], w * volume.spacing[2]) / prep.image_size
    return (side_mm / 10.0) ** 2


@torch.inference_mode()
def probabilities(
    model: Segmenter, images: np.ndarray, *, batch_size: int = 16, device: str = "auto", precision: str = "auto"
) -> np.ndarray:
    """Softmax of ``model`` on ``(N, S, S)`` model slices: ``(N, K, S, S)`` float32."""
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)  # type: ignore[arg-type]
    module = model.module.to(dev, memory_format=torch.channels_last).eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size], np.float32)).unsqueeze(1).to(dev)
        with autocast(dev, prec):
            logits = module(x.contiguous(memory_format=torch.channels_last))
        out.append(logits.float().softmax(dim=1).cpu().numpy())
    k = model.num_classes
    return np.concatenate(out) if out else np.zeros((0, k, *images.shape[1:]), np.float32)


def tta_views(images: np.ndarray, views: int, seed: int) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """``views`` versions of ``(N, S, S)`` slices in [-1, 1]: the slices themselves, then seeded copies shifted by
    up to :data:`TTA_MAX_SHIFT` pixels (air enters at the edges) with contrast x [0.9, 1.1] and brightness
    +-0.1. Returns ``[(images, (dy, dx))]``: the shift to undo on the predictions."""
    rng = np.random.default_rng([seed, 7919])
    out = [(images, (0, 0))]
    for _ in range(views - 1):
        dy, dx = (int(v) for v in rng.integers(-TTA_MAX_SHIFT, TTA_MAX_SHIFT + 1, size=2))
        gain, offset = rng.uniform(0.9, 1.1), rng.uniform(-0.1, 0.1)
        moved = _shift(images, dy, dx, fill=-1.0)
        out.append((np.clip((moved + 1.0) * gain - 1.0 + offset, -1.0, 1.0).astype(np.float32), (dy, dx)))
    return out


def _shift(x: np.ndarray, dy: int, dx: int, fill: float) -> np.ndarray:
    """Shift the last two axes by ``(dy, dx)`` pixels, filling what comes in with ``fill``."""
    out = np.full_like(x, fill)
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def measure_slices(
    model: Segmenter,
    volume: Volume,
    zs: Sequence[int],
    measure: Measure = "error",
    *,
    views: int = 4,
    seed: int = 0,
    batch_size: int = 16,
    device: str = "auto",
    precision: str = "auto",
) -> SliceUncertainty:
    """The ``measure`` of the module docstring for slices ``zs`` of ``volume`` (canonical HU)."""
    if measure not in MEASURES:
        raise ConfigError(f"measure must be one of {list(MEASURES)}, got {measure!r}")
    if measure == "tta" and views < 2:
        raise ConfigError(f"measure 'tta' needs at least 2 views, got {views}")
    images, _ = model_slices(model, volume, zs)
    area = pixel_area_cm2(model, volume)
    run = lambda x: probabilities(model, x, batch_size=batch_size, device=device, precision=precision)  # noqa: E731
    if measure == "tta":
        k = model.num_classes
        votes = np.zeros((len(images), k, *images.shape[1:]), np.float32)
        mean = np.zeros_like(votes)
        for view, (dy, dx) in tta_views(images, views, seed):
            p = run(view)
            background = np.zeros((1, k, 1, 1), np.float32)
            background[0, 0] = 1.0
            p = _shift(p, -dy, -dx, fill=0.0) + (_shift(np.zeros_like(p[:, :1]), -dy, -dx, fill=1.0) * background)
            mean += p / views
            votes += np.eye(k, dtype=np.float32)[p.argmax(1)].transpose(0, 3, 1, 2)
        return _summarize(images, mean, 1.0 - votes.max(1) / views, area)
    return from_probabilities(images, run(images), measure, area)  # type: ignore[arg-type]


def from_probabilities(
    images: np.ndarray, prob: np.ndarray, measure: Literal["error", "entropy", "dice"], area_cm2: float
) -> SliceUncertainty:
    """The single-pass measures from softmax probabilities ``(N, K, S, S)`` of ``images`` (one forward pass can
    serve all three)."""
    if measure == "dice":
        return _dice_loss(images, prob, area_cm2)
    if measure == "error":
        pixel = 1.0 - prob.max(1)
    elif measure == "entropy":
        q = np.clip(prob, 1e-12, 1.0)
        pixel = np.maximum(-(q * np.log(q)).sum(1), 0.0)
    else:
        raise ConfigError(f"from_probabilities computes error, entropy or dice, not {measure!r}")
    return _summarize(images, prob, pixel, area_cm2)


def _summarize(images: np.ndarray, prob: np.ndarray, pixel: np.ndarray, area_cm2: float) -> SliceUncertainty:
    labels = prob.argmax(1).astype(np.uint8)
    return SliceUncertainty(
        images,
        labels,
        pixel.astype(np.float32),
        pixel.reshape(len(pixel), -1).sum(1) * area_cm2,
        organ_share(prob, pixel),
        area_cm2,
    )


def _dice_loss(images: np.ndarray, prob: np.ndarray, area_cm2: float) -> SliceUncertainty:
    """The ``dice`` measure (module docstring). Organ ``c``'s loss is a sum over pixels of
    ``(p_c + h_c - 2 p_c h_c) / (sum p_c + sum h_c)``: that sum, divided by the number of organs counted, is the
    pixel map, so the map sums to the slice's score and each organ's share of the score is its part of it."""
    n, k = prob.shape[:2]
    labels = prob.argmax(1)
    fg = prob[:, 1:]  # (N, K-1, S, S): background is not an organ
    hard = labels[:, None] == np.arange(1, k)[None, :, None, None]
    mass, count = fg.sum((2, 3)), hard.sum((2, 3))
    counted = (mass >= DICE_MIN_PIXELS) | (count > 0)  # (N, K-1)
    denom = np.where(counted, mass + count, 1.0)[..., None, None]
    part = np.where(counted[..., None, None], (fg + hard - 2.0 * fg * hard) / denom, 0.0)  # (N, K-1, S, S)
    organs = np.maximum(counted.sum(1), 1)[:, None, None]
    pixel = (part.sum(1) / organs).astype(np.float32)
    per_organ = part.sum((2, 3))
    share = np.zeros((n, k), np.float64)
    share[:, 1:] = per_organ
    total = share.sum(1, keepdims=True)
    return SliceUncertainty(
        images,
        labels.astype(np.uint8),
        pixel,
        pixel.reshape(n, -1).sum(1).astype(np.float64),
        np.divide(share, total, out=np.zeros_like(share), where=total > 0),
        area_cm2,
    )


def organ_share(prob: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """``(N, K)``: each class's share of the slices' uncertainty, a pixel's uncertainty split evenly between its
    two most likely classes."""
    n, k = prob.shape[:2]
    top2 = np.argsort(prob, axis=1)[:, -2:]  # (N, 2, S, S)
    share = np.zeros((n, k), np.float64)
    half = pixel / 2.0
    for j in range(2):
        np.add.at(
            share, (np.repeat(np.arange(n), half[0].size), top2[:, j].reshape(n, -1).reshape(-1)), half.reshape(-1)
        )
    total = share.sum(1, keepdims=True)
    return np.divide(share, total, out=np.zeros_like(share), where=total > 0)
