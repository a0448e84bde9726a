"""From canonical volumes (HU, mm) to model slices in [-1, 1] and back.

The preprocessing is a frozen :class:`PreprocessConfig` that is written next to the weights, so a model is
always fed exactly the slices it was trained on.

HU window: the default W400/L40 (-160..240 HU) is the standard abdominal soft-tissue window. All 13 FLARE
organs are soft tissue (about 0..200 HU with portal-venous contrast; fat about -100 HU), so spending the whole
[-1, 1] range on it keeps their contrast; air, lung and bone saturate at -1 / +1, which is what a radiologist
reading abdominal CT sees.

Non-square slices: each slice is **padded to a square** (centred; images with the window's lower end, i.e.
-1 after windowing, which is air; labels with 0) and then resized to ``image_size x image_size``. Padding
keeps the anatomy's pixel aspect ratio, where a plain resize would squash a 120x160 slice. The inverse
(:func:`model_slices_to_volume`) resizes back to the padded square and crops, so shapes match the reference
exactly.

Resampling: images use area averaging when shrinking (anti-aliased) and bilinear interpolation when growing;
labels use nearest neighbour with pixel-centre alignment, so ids are never mixed.

Example:
    >>> cfg = PreprocessConfig(image_size=128)
    >>> vol = read_volume("case_0000.nii.gz")                       # doctest: +SKIP
    >>> volume_to_model_slices(vol, cfg).shape                      # doctest: +SKIP
    (90, 128, 128)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import cv2
import numpy as np

from smp_diffusion_encoder.data.volume import Volume
from smp_diffusion_encoder.errors import ConfigError


@dataclass(frozen=True)
class PreprocessConfig:
    """How CT volumes become model input.

    Attributes:
        hu_window: ``(low, high)`` HU mapped linearly to ``[-1, 1]`` and clipped (default W400/L40, the
            abdominal soft-tissue window).
        image_size: slices are padded to square and resized in-plane to ``image_size x image_size`` pixels.
    """

    hu_window: tuple[float, float] = (-160.0, 240.0)
    image_size: int = 256

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.hu_window)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ConfigError(f"hu_window must be two finite HU values, low < high; got {self.hu_window!r}")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 8:
            raise ConfigError(f"image_size must be an integer >= 8; got {self.image_size!r}")
        object.__setattr__(self, "hu_window", (lo, hi))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``hu_window`` as a list)."""
        d = asdict(self)
        d["hu_window"] = list(self.hu_window)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown preprocessing keys {unknown}; expected some of {sorted(known)}")
        kwargs = dict(d)
        if "hu_window" in kwargs:
            window = kwargs["hu_window"]
            if not isinstance(window, (list, tuple)) or len(window) != 2:
                raise ConfigError(f"hu_window must be [low, high]; got {window!r}")
            kwargs["hu_window"] = (float(window[0]), float(window[1]))
        return cls(**kwargs)


def window_hu(hu: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """HU (any shape) -> float32 in ``[-1, 1]``: ``cfg.hu_window`` maps linearly onto ``[-1, 1]``, clipped."""
    lo, hi = cfg.hu_window
    x = (np.asarray(hu, dtype=np.float32) - np.float32(lo)) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
    return np.clip(x, -1.0, 1.0, out=x)


def resize_image_slices(x: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """``(Z, H, W)`` float -> ``(Z, h, w)`` float32 (``size`` int means square). Area averaging when the
    slice shrinks (fewer pixels, anti-aliased), bilinear otherwise. No padding: see :func:`pad_to_square`."""
    h, w = (size, size) if isinstance(size, int) else size
    x = np.asarray(x, dtype=np.float32)
    _check_stack(x, "resize_image_slices")
    if x.shape[1:] == (h, w):
        return x.copy()
    shrinking = h * w < x.shape[1] * x.shape[2]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = np.empty((x.shape[0], h, w), dtype=np.float32)
    for k in range(x.shape[0]):
        out[k] = cv2.resize(x[k], (w, h), interpolation=interpolation)
    return out


def resize_label_slices(y: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """``(Z, H, W)`` integer labels -> ``(Z, h, w)``, nearest neighbour (pixel-centre aligned), same dtype."""
    h, w = (size, size) if isinstance(size, int) else size
    y = np.asarray(y)
    _check_stack(y, "resize_label_slices")
    rows = _nearest_index(y.shape[1], h)
    cols = _nearest_index(y.shape[2], w)
    return np.ascontiguousarray(y[:, rows[:, None], cols[None, :]])


def pad_to_square(x: np.ndarray, value: float | int) -> np.ndarray:
    """Pad ``(..., H, W)`` centred to ``(..., L, L)`` with ``L = max(H, W)`` (extra pixel after)."""
    h, w = x.shape[-2:]
    side = max(h, w)
    (top, bottom), (left, right) = _split(side - h), _split(side - w)
    if side == h == w:
        return x
    pad = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(x, pad, mode="constant", constant_values=value)


def crop_from_square(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`pad_to_square`: ``(..., L, L)`` -> ``(..., H, W)``."""
    h, w = shape
    top, left = _split(x.shape[-2] - h)[0], _split(x.shape[-1] - w)[0]
    return x[..., top : top + h, left : left + w]


def volume_to_model_slices(volume: Volume, cfg: PreprocessConfig) -> np.ndarray:
    """Canonical image volume (HU) -> ``(Z, S, S)`` float32 in ``[-1, 1]``, ``S = cfg.image_size``."""
    x = pad_to_square(window_hu(volume.array, cfg), -1.0)
    return resize_image_slices(x, cfg.image_size)


def labels_to_model_slices(labels: Volume, cfg: PreprocessConfig) -> np.ndarray:
    """Canonical label volume -> ``(Z, S, S)`` uint8 ids (nearest neighbour, same padding as the images)."""
    y = labels.array
    if y.size and int(y.max()) > 255:
        raise ConfigError(f"{labels.name}: label ids up to {int(y.max())} do not fit uint8 model targets")
    return resize_label_slices(pad_to_square(y.astype(np.uint8, copy=False), 0), cfg.image_size)


def model_slices_to_volume(
    pred: np.ndarray, reference: Volume, *, kind: Literal["label", "prob"]
) -> np.ndarray:
    """Undo the in-plane padding and resize: ``(Z, S, S)`` -> ``(Z, Y, X)`` of ``reference.array``.

    ``kind="label"``: integer ids, nearest neighbour, dtype kept. ``kind="prob"``: float maps resized
    smoothly (bilinear/area), float32; a leading class axis is allowed, ``(C, Z, S, S) -> (C, Z, Y, X)``.
    """
    pred = np.asarray(pred)
    z, h, w = reference.array.shape
    if pred.ndim not in (3, 4) or pred.shape[-3] != z or pred.shape[-2] != pred.shape[-1]:
        raise ConfigError(
            f"predictions are {pred.shape}; expected (Z, S, S) or (C, Z, S, S) with Z = {z} for {reference.name}"
        )
    if kind == "label" and pred.ndim != 3:
        raise ConfigError(f"label predictions must be (Z, S, S), got {pred.shape}")
    side = max(h, w)
    stack = pred.reshape(-1, *pred.shape[-2:])
    if kind == "label":
        square = resize_label_slices(stack, side)
    elif kind == "prob":
        square = resize_image_slices(stack, side)
    else:
        raise ConfigError(f"kind must be 'label' or 'prob', got {kind!r}")
    out = crop_from_square(square, (h, w)).reshape(*pred.shape[:-2], h, w)
    return np.ascontiguousarray(out)


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel centre: ``floor((i + 0.5) * n_in / n_out)``."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def _split(total: int) -> tuple[int, int]:
    return total // 2, total - total // 2


def _check_stack(x: np.ndarray, what: str) -> None:
    if x.ndim != 3:
        raise ConfigError(f"{what} needs a (Z, H, W) stack of slices, got shape {x.shape}")
