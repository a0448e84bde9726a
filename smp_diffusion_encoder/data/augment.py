"""2D image + mask augmentation for model slices: nnU-Net's spatial and intensity set, and contrast phases.

Input and output: ``image`` ``(H, W)`` float32 in ``[-1, 1]`` (a CT slice windowed as
:mod:`smp_diffusion_encoder.data.preprocessing` does; ``hu_window`` converts HU figures to that scale), ``mask``
``(H, W)`` uint8 FLARE ids. Masks are warped with nearest-neighbour interpolation, so no new ids appear;
regions moved in from outside the slice are air (-1) and background (0).

Strengths:

* ``"default"`` (every head's default, :class:`~smp_diffusion_encoder.finetune.config.FinetuneConfig`):
  contrast phases, then the spatial and intensity set below;
* ``"spatial-intensity"``: the spatial and intensity set alone (for label maps that are not FLARE 2022 ids,
  and the ablation);
* ``"contrast"``: contrast phases alone (ablation);
* ``"none"``: identity.

**Contrast phases** (:func:`~smp_diffusion_encoder.data.enhancement.simulate_enhancement`): each labeled organ's
HU moves to a random enhancement drawn from its physiological range (sources there), always applied: the
drawn phase level is uniform, so the views span non-contrast to arterial/portal-venous appearance.

**Spatial and intensity set**: the transforms and magnitudes of nnU-Net's default training augmentation
(Isensee et al., Nature Methods 2021; ``nnunetv2`` ``get_training_transforms``), with each transform's
probability of nnU-Net, adapted to single CT slices:

==========================  ==========================================================  ====
transform                   magnitude                                                   p
==========================  ==========================================================  ====
rotation                    +-15 degrees (nnU-Net's 2D range for non-square patches;      0.2
                            its +-180 would put the liver on either side)
scaling                     0.7-1.4                                                     0.2
elastic deformation         smooth displacement field: mean 1.7 px (5 mm), at most ~4 px  0.2
Gaussian noise              standard deviation 0-30 HU                                   0.1
Gaussian blur               sigma 0.5-1 px                                               0.2
brightness (multiplicative) x 0.75-1.25 about the labeled tissue's mean HU               0.15
contrast                    x 0.75-1.25 about the slice mean, range kept                 0.15
low resolution              down by 0.75-1 (nearest), back up (cubic)                    0.25
gamma, inverted             0.7-1.5 on the [0, 1] image, mean and std kept               0.1
gamma                       0.7-1.5 on the [0, 1] image, mean and std kept               0.3
==========================  ==========================================================  ====

Two magnitudes are set in physical terms instead of nnU-Net's numbers, because our slices have 3 mm pixels where
nnU-Net's abdominal CT plans have about 0.8 mm: low resolution goes down to 0.75 (4 mm pixels; nnU-Net's 0.5 at
0.8 mm is 1.6 mm), and noise is added only where the window is not saturated (air stays air, as it would in HU).

**No flips.** Anatomy is lateralized: a left-right flip turns the right kidney (id 2) into something that
sits where the left kidney (id 13) belongs, and likewise the adrenals (7/8), liver vs spleen; the labels
would contradict the image. Up-down flips put anterior organs posterior. Neither is used (nnU-Net mirrors;
we do not).

Rotation, scaling and the elastic field are composed into one coordinate map and the slice is resampled once
(cubic; the mask nearest), as nnU-Net does: three resamplings in a row (albumentations' separate transforms) blur
a 3 mm slice visibly. Everything runs on numpy, SciPy and OpenCV from one ``numpy`` random generator per call
stream (:meth:`Augmentation.reseed`).

Example:
    >>> aug = build_augmentation("default", seed=0)
    >>> image2, mask2 = aug(np.zeros((64, 64), np.float32), np.zeros((64, 64), np.uint8))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
from scipy import ndimage

from smp_diffusion_encoder.data.enhancement import simulate_enhancement
from smp_diffusion_encoder.errors import ConfigError

Strength = Literal["none", "default", "spatial-intensity", "contrast"]
STRENGTHS: tuple[str, ...] = ("none", "default", "spatial-intensity", "contrast")
DEFAULT_HU_WINDOW: tuple[float, float] = (-160.0, 240.0)
#: Elastic field: uniform noise in [-1, 1] smoothed by a Gaussian of ELASTIC_SIGMA px, times ELASTIC_ALPHA px
#: (mean displacement 1.7 px, at most about 4 px on a 128 px slice).
ELASTIC_ALPHA, ELASTIC_SIGMA = 200.0, 10.0


def _spatial(x: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (p 0.2, +-15 deg), scaling (p 0.2, 0.7-1.4) and an elastic field (p 0.2) about the slice centre,
    one resampling: image cubic (outside: air, -1), mask nearest (outside: 0)."""
    rotate, scale, elastic = rng.uniform(size=3) < 0.2
    angle = np.deg2rad(rng.uniform(-15.0, 15.0)) if rotate else 0.0
    zoom = rng.uniform(0.7, 1.4) if scale else 1.0
    if not (rotate or scale or elastic):
        return x, mask
    h, w = x.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    dy, dx = yy - cy, xx - cx
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    src_y = cy + (cos * dy - sin * dx) / zoom  # output pixel <- input position (inverse map)
    src_x = cx + (sin * dy + cos * dx) / zoom
    if elastic:
        for coords in (src_y, src_x):
            coords += (ndimage.gaussian_filter(rng.uniform(-1.0, 1.0, (h, w)), ELASTIC_SIGMA) * ELASTIC_ALPHA).astype(
                np.float32
            )
    image = cv2.remap(x, src_x, src_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)
    labels = cv2.remap(mask, src_x, src_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return image, labels


class Augmentation:
    """Callable ``(image, mask) -> (image, mask)``; see the module docstring. Picklable (DataLoader workers).

    Args:
        strength: one of :data:`STRENGTHS`.
        seed: start of the random stream (``None``: fresh entropy).
        hu_window: the ``(low, high)`` HU window that mapped the image to ``[-1, 1]`` (converts the HU
            figures; the model's :class:`~smp_diffusion_encoder.data.preprocessing.PreprocessingConfig` window).

    With a ``seed`` the sequence of random draws is reproducible; :meth:`reseed` restarts it (e.g. one seed per
    augmented view, or per DataLoader worker).
    """

    def __init__(
        self,
        strength: Strength = "default",
        seed: int | None = None,
        hu_window: tuple[float, float] = DEFAULT_HU_WINDOW,
    ) -> None:
        if strength not in STRENGTHS:
            raise ConfigError(f"augmentation strength {strength!r}: expected one of {STRENGTHS}")
        lo, hi = (float(v) for v in hu_window)
        if not lo < hi:
            raise ConfigError(f"hu_window must be (low, high) with low < high, got {hu_window!r}")
        self.strength, self.hu_window = strength, (lo, hi)
        self.contrast = strength in ("default", "contrast")
        self.generic = strength in ("default", "spatial-intensity")
        self._rng = np.random.default_rng(seed)

    def reseed(self, seed: int | None) -> None:
        """Restart the random stream from ``seed``."""
        self._rng = np.random.default_rng(seed)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, *, organs: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One augmented copy of ``image`` ``(H, W)`` float32 in [-1, 1] and ``mask`` ``(H, W)`` uint8.

        ``organs``: the label ids the contrast phase draws a level for (default: those in ``mask``). Every random
        draw is then independent of the content, so the slices of a stack, each augmented after the same
        :meth:`reseed` with the same ``organs`` (e.g. the union of their labels), get the same spatial transform,
        phase and organ levels (the intensity steps still pivot on each slice's own mean).

        Raises:
            ConfigError: shapes or dtypes other than the above.
        """
        if image.ndim != 2 or image.shape != mask.shape:
            raise ConfigError(
                f"augmentation needs (H, W) image and mask of one shape; got {image.shape} and {mask.shape}"
            )
        if image.dtype != np.float32 or mask.dtype != np.uint8:
            raise ConfigError(f"augmentation needs a float32 image and a uint8 mask; got {image.dtype}, {mask.dtype}")
        if self.strength == "none":
            return image, mask
        lo, hi = self.hu_window
        per_unit = (hi - lo) / 2.0  # HU per unit of the [-1, 1] scale
        x = image
        rng = self._rng
        if self.contrast:
            hu = lo + (x + 1.0) * per_unit
            hu = simulate_enhancement(hu, mask, rng, organs=organs)
            x = np.clip((hu - lo) / per_unit - 1.0, -1.0, 1.0).astype(np.float32)
        if self.generic:
            x, mask = _spatial(x, mask, rng)
            if rng.uniform() < 0.1:  # Gaussian noise, std 0-30 HU, where the window is not saturated (air stays air)
                inside = (x > -0.995) & (x < 0.995)  # (resampling leaves air a hair above -1)
                x = x + inside * rng.normal(0.0, rng.uniform(0.0, 30.0) / per_unit, x.shape).astype(np.float32)
            if rng.uniform() < 0.2:  # Gaussian blur, sigma 0.5-1 px
                x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.0), borderType=cv2.BORDER_REPLICATE)
            if rng.uniform() < 0.15:  # brightness: about the labeled tissue's mean (nnU-Net: the foreground mean)
                tissue = mask > 0 if (mask > 0).any() else x > -1.0
                pivot = float(x[tissue].mean()) if tissue.any() else 0.0
                x = pivot + rng.uniform(0.75, 1.25) * (x - pivot)
            if rng.uniform() < 0.15:  # contrast about the slice mean, original range kept
                mean, low, high = float(x.mean()), float(x.min()), float(x.max())
                x = np.clip(mean + rng.uniform(0.75, 1.25) * (x - mean), low, high)
            if rng.uniform() < 0.25:  # low resolution: down (nearest) by 0.75-1, back up (cubic)
                h, w = x.shape
                f = rng.uniform(0.75, 1.0)
                small = cv2.resize(x, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_NEAREST)
                x = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
            for invert, p in ((True, 0.1), (False, 0.3)):
                if rng.uniform() < p:
                    x = _gamma(x, rng.uniform(0.7, 1.5), invert)
        img = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)  # cubic resampling may overshoot
        return img.reshape(image.shape), np.ascontiguousarray(mask, dtype=np.uint8).reshape(image.shape)

    def __repr__(self) -> str:
        return f"Augmentation({self.strength!r}, hu_window={self.hu_window})"


def _gamma(x: np.ndarray, gamma: float, invert: bool) -> np.ndarray:
    """nnU-Net's gamma transform on ``[-1, 1]`` data: on ``[0, 1]``, optionally inverted, mean and std restored."""
    x01 = np.clip((x + 1.0) * 0.5, 0.0, 1.0)
    mean, std = float(x01.mean()), float(x01.std())
    y = 1.0 - (1.0 - x01) ** gamma if invert else x01**gamma
    if std > 0 and float(y.std()) > 0:
        y = (y - y.mean()) / y.std() * std + mean
    return (y * 2.0 - 1.0).astype(np.float32)


def build_augmentation(
    strength: Strength = "default", *, seed: int | None = None, hu_window: tuple[float, float] = DEFAULT_HU_WINDOW
) -> Augmentation:
    """The augmentation for ``strength`` (one of :data:`STRENGTHS`); see the module docstring."""
    return Augmentation(strength, seed, hu_window)
