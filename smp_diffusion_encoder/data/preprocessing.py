"""From canonical volumes (HU, mm) to model slices in [-1, 1] and back.

The preprocessing is a frozen :class:`PreprocessingConfig` written next to the weights, so a model is always
fed slices made the way its training slices were made.

HU window: the default W400/L40 (-160..240 HU) is the standard abdominal soft-tissue window. All 13 FLARE
organs are soft tissue (about 0..200 HU with portal-venous contrast; fat about -100 HU), so spending the whole
[-1, 1] range on it keeps their contrast; air, lung and bone saturate at -1 / +1, which is what a radiologist
reading abdominal CT sees.

In-plane layout, two modes (:class:`SliceGeometry` holds one volume's layout and its exact inverse):

* **physical** (``spacing_mm`` set; the default for new configs is ``384 mm / image_size``, e.g. 3 mm at
  128 px): every slice is resampled to ``spacing_mm`` mm per pixel (the field's practice, nnU-Net's "target
  spacing", here in-plane only: the model is 2D), then an ``image_size x image_size`` window is cut around
  the body's centre (padded with air where the scan is smaller). One window per volume: the body centre is
  the centre of the bounding box of the largest connected region above :data:`BODY_HU` in the projection
  of all slices, so every slice of a volume is cut at the same place. An organ therefore covers the same
  number of pixels whatever the scanner's field of view (a 500 mm and a 366 mm scan differ 1.4x in pixels
  per mm when each is squeezed into 128 px).
* **legacy whole field of view** (``spacing_mm=None``): each slice is padded to a square (centred; air)
  and resized to ``image_size``. Weight folders written before physical preprocessing existed have no
  ``spacing_mm`` in their ``preprocessing`` and keep this mode (:meth:`PreprocessingConfig.from_dict`).

Predictions are mapped back onto the input's exact grid by the inverse of the same layout; pixels outside
the model's window are background.

Resampling: images use area averaging when shrinking (anti-aliased) and bilinear interpolation when growing;
labels use nearest neighbour with pixel-centre alignment, so ids are never mixed.

Example:
    >>> cfg = PreprocessingConfig(image_size=128)        # physical: 3 mm pixels, 384 mm window
    >>> from importlib.resources import files
    >>> from smp_diffusion_encoder.data.volume import read_volume
    >>> vol = read_volume(files("smp_diffusion_encoder") / "demo_data/train/REALCT_Tr_0001/image.nii.gz")
    >>> geometry = SliceGeometry.of(vol, cfg)
    >>> x = geometry.image_slices(vol, cfg)                         # (Z, size, size) in [-1, 1]
    >>> x.shape, float(x.min()), float(x.max())
    ((112, 128, 128), -1.0, 1.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
from scipy import ndimage

from smp_diffusion_encoder.errors import ConfigError

if TYPE_CHECKING:  # annotations only: the store and training need no volume readers (nibabel, SimpleITK)
    from smp_diffusion_encoder.data.volume import Volume

#: Field of view (mm) of the default physical layout: ``spacing_mm = DEFAULT_FIELD_OF_VIEW_MM / image_size``.
#: 384 mm holds an adult abdomen (FLARE 2022 scans span 330-390 mm) with a margin.
DEFAULT_FIELD_OF_VIEW_MM = 384.0
#: Voxels above this HU count as body when locating the crop window (soft tissue and fat, not lung or air).
BODY_HU = -500.0


@dataclass(frozen=True)
class PreprocessingConfig:
    """How CT volumes become model input.

    Attributes:
        hu_window: ``(low, high)`` HU mapped linearly to ``[-1, 1]`` and clipped (default W400/L40, the
            abdominal soft-tissue window).
        image_size: model slices are ``image_size x image_size`` pixels.
        spacing_mm: in-plane pixel spacing (mm) of model slices (physical mode); ``None`` squeezes each
            slice's whole field of view into ``image_size`` (legacy mode). ``"auto"`` (the default) resolves
            to ``DEFAULT_FIELD_OF_VIEW_MM / image_size``.
    """

    hu_window: tuple[float, float] = (-160.0, 240.0)
    image_size: int = 256
    spacing_mm: float | None | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.hu_window)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ConfigError(f"hu_window must be two finite HU values, low < high; got {self.hu_window!r}")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 8:
            raise ConfigError(f"image_size must be an integer >= 8; got {self.image_size!r}")
        object.__setattr__(self, "hu_window", (lo, hi))
        spacing = self.spacing_mm
        if spacing == "auto":
            spacing = DEFAULT_FIELD_OF_VIEW_MM / self.image_size
        if spacing is not None:
            if isinstance(spacing, bool) or not isinstance(spacing, (int, float)) or not 0 < spacing < 100:
                raise ConfigError(f"spacing_mm must be a number of mm in (0, 100), 'auto' or None; got {spacing!r}")
            spacing = float(spacing)
        object.__setattr__(self, "spacing_mm", spacing)

    @property
    def physical(self) -> bool:
        """True when slices are resampled to ``spacing_mm`` (False: legacy whole field of view)."""
        return self.spacing_mm is not None

    @property
    def field_of_view_mm(self) -> float | None:
        """Side of the model's window in mm (``None`` in legacy mode, where it is each slice's own)."""
        return None if self.spacing_mm is None else self.spacing_mm * self.image_size  # type: ignore[operator]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``hu_window`` as a list)."""
        d = asdict(self)
        d["hu_window"] = list(self.hu_window)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessingConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`.

        A dict without ``spacing_mm`` (written before physical preprocessing existed) gives the legacy
        whole-field-of-view mode, so old weight folders keep their preprocessing.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown preprocessing keys {unknown}; expected some of {sorted(known)}")
        kwargs = {"spacing_mm": None, **d}
        if "hu_window" in kwargs:
            window = kwargs["hu_window"]
            if not isinstance(window, (list, tuple)) or len(window) != 2:
                raise ConfigError(f"hu_window must be [low, high]; got {window!r}")
            kwargs["hu_window"] = (float(window[0]), float(window[1]))
        return cls(**kwargs)

    def describe(self) -> str:
        """One line for model cards and reports."""
        window = f"HU window [{self.hu_window[0]:g}, {self.hu_window[1]:g}] -> [-1, 1]"
        if self.spacing_mm is None:
            return f"{window}; each slice's field of view padded to a square and resized to {self.image_size} px"
        return (
            f"{window}; slices resampled to {self.spacing_mm:g} mm pixels, {self.image_size} x "
            f"{self.image_size} px window ({self.field_of_view_mm:g} mm) centred on the body"
        )


def window_hu(hu: np.ndarray, cfg: PreprocessingConfig) -> np.ndarray:
    """HU (any shape) -> float32 in ``[-1, 1]``: ``cfg.hu_window`` maps linearly onto ``[-1, 1]``, clipped."""
    lo, hi = cfg.hu_window
    x = (np.asarray(hu, dtype=np.float32) - np.float32(lo)) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
    return np.clip(x, -1.0, 1.0, out=x)


@dataclass(frozen=True)
class SliceGeometry:
    """Where one volume's ``(Y, X)`` slices sit in the model's ``S x S`` slices, and the way back.

    Physical mode: the slice is resampled to ``scaled_shape`` (``spacing_mm`` per pixel) and the model sees
    rows ``top .. top + S`` and columns ``left .. left + S`` of it (negative or overhanging parts are air).
    Legacy mode: the slice is padded to a ``side x side`` square and resized to ``S``.

    Build it with :meth:`of` from the IMAGE volume (the window is placed on the body) and use the same
    geometry for its label map and predictions.
    """

    source_shape: tuple[int, int]
    size: int
    mode: Literal["physical", "legacy"]
    scaled_shape: tuple[int, int] = (0, 0)
    top: int = 0
    left: int = 0

    @classmethod
    def of(cls, image: Volume, cfg: PreprocessingConfig) -> SliceGeometry:
        """The layout of ``image`` (canonical HU volume) under ``cfg`` (see the module docstring)."""
        _, h, w = image.array.shape
        size = cfg.image_size
        if cfg.spacing_mm is None:
            return cls((h, w), size, "legacy")
        _, sy, sx = image.spacing
        scale_y, scale_x = sy / cfg.spacing_mm, sx / cfg.spacing_mm
        scaled = (max(1, int(round(h * scale_y))), max(1, int(round(w * scale_x))))
        cy, cx = body_centre(image.array)
        # centre of the body in scaled pixel coordinates (pixel centres at integer + 0.5 in both grids)
        cy, cx = (cy + 0.5) * scaled[0] / h, (cx + 0.5) * scaled[1] / w
        return cls(
            (h, w), size, "physical", scaled, _window_start(cy, scaled[0], size), _window_start(cx, scaled[1], size)
        )

    # ----- to the model --------------------------------------------------------------------------
    def image_slices(self, image: Volume, cfg: PreprocessingConfig) -> np.ndarray:
        """Canonical image volume (HU) -> ``(Z, S, S)`` float32 in ``[-1, 1]``."""
        return self._to_model(window_hu(self._check(image.array), cfg), -1.0, resize_image_slices)

    def label_slices(self, labels: Volume) -> np.ndarray:
        """Canonical label volume -> ``(Z, S, S)`` uint8 ids (nearest neighbour, same layout as the image)."""
        y = self._check(labels.array)
        if y.size and int(y.max()) > 255:
            raise ConfigError(f"{labels.name}: label ids up to {int(y.max())} do not fit uint8 model targets")
        return self._to_model(y.astype(np.uint8, copy=False), 0, resize_label_slices)

    # ----- back to the volume --------------------------------------------------------------------
    def labels_to_volume(self, labels: np.ndarray) -> np.ndarray:
        """``(Z, S, S)`` ids -> ``(Z, Y, X)`` (nearest neighbour, dtype kept; outside the window: 0)."""
        labels = np.asarray(labels)
        self._check_model(labels, "label predictions")
        return self._to_source(labels, np.zeros(len(labels), labels.dtype), resize_label_slices)

    def probabilities_to_volume(self, probabilities: np.ndarray) -> np.ndarray:
        """``(N, K, S, S)`` class probabilities -> ``(N, K, Y, X)`` float32, resampled smoothly.

        Outside the model's window the probability is 1 for class 0 (background), 0 for the others.
        """
        p = np.asarray(probabilities, dtype=np.float32)
        if p.ndim != 4:
            raise ConfigError(f"probabilities must be (N, K, S, S), got {p.shape}")
        n, k = p.shape[:2]
        self._check_model(p.reshape(n * k, *p.shape[2:]), "probabilities")
        fill = np.tile(np.eye(k, dtype=np.float32)[0], n)  # background one-hot for every (n, k) map
        out = self._to_source(p.reshape(n * k, *p.shape[2:]), fill, resize_image_slices)
        return out.reshape(n, k, *self.source_shape)

    # ----- internals -----------------------------------------------------------------------------
    def _check(self, array: np.ndarray) -> np.ndarray:
        if array.ndim != 3 or array.shape[1:] != self.source_shape:
            raise ConfigError(f"volume slices are {array.shape[1:]}, this geometry was made for {self.source_shape}")
        return array

    def _check_model(self, array: np.ndarray, what: str) -> None:
        if array.ndim != 3 or array.shape[1:] != (self.size, self.size):
            raise ConfigError(f"{what} are {array.shape}; expected (N, {self.size}, {self.size})")

    def _to_model(self, x: np.ndarray, fill: float, resize: Any) -> np.ndarray:
        if self.mode == "legacy":
            return resize(pad_to_square(x, fill), self.size)
        scaled = resize(x, self.scaled_shape)
        out = np.full((x.shape[0], self.size, self.size), fill, dtype=scaled.dtype)
        (src_r, dst_r), (src_c, dst_c) = self._overlap()
        out[:, dst_r, dst_c] = scaled[:, src_r, src_c]
        return out

    def _to_source(self, x: np.ndarray, fill: np.ndarray, resize: Any) -> np.ndarray:
        h, w = self.source_shape
        if self.mode == "legacy":
            side = max(h, w)
            return np.ascontiguousarray(crop_from_square(resize(x, side), (h, w)))
        scaled = np.empty((x.shape[0], *self.scaled_shape), dtype=x.dtype)
        scaled[...] = fill.reshape(-1, 1, 1)
        (src_r, dst_r), (src_c, dst_c) = self._overlap()
        scaled[:, src_r, src_c] = x[:, dst_r, dst_c]
        return resize(scaled, (h, w))

    def _overlap(self) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
        """``((scaled rows, model rows), (scaled cols, model cols))`` the window and the scaled slice share."""
        return (_span(self.top, self.scaled_shape[0], self.size), _span(self.left, self.scaled_shape[1], self.size))


def body_centre(hu: np.ndarray) -> tuple[float, float]:
    """``(row, column)`` centre of the body in a ``(Z, Y, X)`` HU volume (pixel coordinates).

    The body is the largest connected region of the projection of ``hu > BODY_HU`` over all slices, after
    a small opening that detaches thin contacts such as the table's edge; its bounding-box centre is
    returned. A volume without body pixels gives the slice centre.
    """
    z, h, w = hu.shape
    step = max(1, z // 64)  # the projection does not need every slice of a fine series
    mask = (hu[::step] > BODY_HU).any(axis=0)
    mask = ndimage.binary_opening(mask, iterations=2)
    labels, n = ndimage.label(mask)
    if n == 0:
        return (h - 1) / 2.0, (w - 1) / 2.0
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    rows, cols = np.nonzero(labels == largest)
    return (rows.min() + rows.max()) / 2.0, (cols.min() + cols.max()) / 2.0


def _window_start(centre: float, extent: int, size: int) -> int:
    """First row of a ``size`` window centred on ``centre`` (continuous coordinates), kept over the image:
    inside it when the image is larger than the window, holding all of it when smaller."""
    start = int(round(centre - size / 2.0))
    lo, hi = sorted((0, extent - size))
    return min(max(start, lo), hi)


def _span(start: int, extent: int, size: int) -> tuple[slice, slice]:
    """Shared part of ``[start, start + size)`` and ``[0, extent)``: (in scaled coords, in window coords)."""
    lo, hi = max(start, 0), min(start + size, extent)
    return slice(lo, hi), slice(lo - start, hi - start)


def volume_to_model_slices(volume: Volume, cfg: PreprocessingConfig) -> np.ndarray:
    """Canonical image volume (HU) -> ``(Z, S, S)`` float32 in ``[-1, 1]`` (its own :class:`SliceGeometry`)."""
    return SliceGeometry.of(volume, cfg).image_slices(volume, cfg)


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


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel centre: ``floor((i + 0.5) * n_in / n_out)``."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def _split(total: int) -> tuple[int, int]:
    return total // 2, total - total // 2


def _check_stack(x: np.ndarray, what: str) -> None:
    if x.ndim != 3:
        raise ConfigError(f"{what} needs a (Z, H, W) stack of slices, got shape {x.shape}")
