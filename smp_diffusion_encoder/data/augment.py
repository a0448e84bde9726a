"""2D image + mask augmentation for model slices (albumentations 2.x).

Input and output: ``image`` ``(H, W)`` float32 in ``[-1, 1]`` (a windowed CT slice, see
:mod:`smp_diffusion_encoder.data.preprocessing`), ``mask`` ``(H, W)`` uint8 FLARE ids. Masks are warped with
nearest-neighbour interpolation so no new ids appear; regions shifted in from outside the slice are filled
with air (-1) and background (0).

Strengths (all mild: a CT scanner does not produce wild geometry):

* ``"none"`` - identity.
* ``"light"`` - affine (scale 0.95-1.05, rotation +-5 deg, shift +-3 %), brightness +-4 HU, noise 0-4 HU.
* ``"default"`` - affine (scale 0.9-1.1, rotation +-10 deg, shift +-5 %), mild grid distortion (p=0.25),
  brightness +-8 HU / contrast +-4 % (about the window's lower end, i.e. a slightly different window
  width), Gaussian noise with a standard deviation of 2-8 HU (HU figures for the default 400 HU window).

**No flips.** Anatomy is lateralized: a left-right flip turns the right kidney (id 2) into something that
sits where the left kidney (id 13) belongs, and likewise the adrenals (7/8), liver vs spleen; the labels
would contradict the image. Up-down flips put anterior organs posterior. Neither is used.

The transforms run in ``[0, 1]`` space (``(x + 1) / 2``), the range albumentations assumes for float
images, and are mapped back and clipped to ``[-1, 1]``.

Example:
    >>> aug = build_augmentation("default", seed=0)
    >>> image2, mask2 = aug(np.zeros((64, 64), np.float32), np.zeros((64, 64), np.uint8))
"""

from __future__ import annotations

from typing import Literal

import albumentations as A
import cv2
import numpy as np

from smp_diffusion_encoder.errors import ConfigError

Strength = Literal["none", "light", "default"]
STRENGTHS: tuple[str, ...] = ("none", "light", "default")


def _transforms(strength: Strength) -> list[A.BasicTransform]:
    geometry = dict(interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                    border_mode=cv2.BORDER_CONSTANT, fill=0.0, fill_mask=0)
    if strength == "light":
        return [A.Affine(scale=(0.95, 1.05), rotate=(-5, 5), translate_percent=(-0.03, 0.03), p=0.5, **geometry),
                A.RandomBrightnessContrast(brightness_limit=0.01, contrast_limit=0.0, p=0.5),
                A.GaussNoise(std_range=(0.0, 0.01), p=0.5)]
    return [A.Affine(scale=(0.9, 1.1), rotate=(-10, 10), translate_percent=(-0.05, 0.05), p=0.7, **geometry),
            A.GridDistortion(num_steps=5, distort_limit=(-0.08, 0.08), p=0.25, **geometry),
            A.RandomBrightnessContrast(brightness_limit=0.02, contrast_limit=0.04, p=0.5),
            A.GaussNoise(std_range=(0.005, 0.02), p=0.5)]


class Augmentation:
    """Callable ``(image, mask) -> (image, mask)``; see the module docstring. Picklable (DataLoader workers).

    With a ``seed`` the sequence of random draws is reproducible; give each DataLoader worker its own
    seed with :meth:`reseed` (e.g. in ``worker_init_fn``), or all workers augment alike.
    """

    def __init__(self, strength: Strength = "default", seed: int | None = None) -> None:
        if strength not in STRENGTHS:
            raise ConfigError(f"augmentation strength {strength!r}: expected one of {STRENGTHS}")
        self.strength = strength
        self._compose = None if strength == "none" else A.Compose(_transforms(strength), seed=seed)

    def reseed(self, seed: int | None) -> None:
        """Restart the random stream from ``seed``."""
        if self._compose is not None:
            self._compose.set_random_seed(seed)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if image.ndim != 2 or image.shape != mask.shape:
            raise ConfigError(f"augmentation needs (H, W) image and mask of one shape; got {image.shape} "
                              f"and {mask.shape}")
        if image.dtype != np.float32 or mask.dtype != np.uint8:
            raise ConfigError(f"augmentation needs a float32 image and a uint8 mask; got {image.dtype}, {mask.dtype}")
        if self._compose is None:
            return image, mask
        out = self._compose(image=(image + 1.0) * 0.5, mask=mask)
        img = np.clip(out["image"].astype(np.float32, copy=False) * 2.0 - 1.0, -1.0, 1.0)
        return img.reshape(image.shape), np.ascontiguousarray(out["mask"], dtype=np.uint8).reshape(mask.shape)

    def __repr__(self) -> str:
        return f"Augmentation({self.strength!r})"


def build_augmentation(strength: Strength = "default", *, seed: int | None = None) -> Augmentation:
    """The augmentation for ``strength`` (``"none"``, ``"light"``, ``"default"``); see the module docstring."""
    return Augmentation(strength, seed)
