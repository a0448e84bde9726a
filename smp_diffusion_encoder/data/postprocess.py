"""3D sense after a 2D model: context from neighbouring slices, and one connected piece per organ.

A 2D model segments each axial slice alone. Two cheap steps use what the volume knows:

* **Neighbouring slices** (:func:`smooth_along_z`, ``z_context_mm > 0``): each slice's class probabilities are
  averaged with those of the slices ``z_context_mm`` mm above and below (linearly interpolated between slices,
  so the same physical distance on a 2 mm and a 5 mm scan): ``p'(z) = (1 - 2w) p(z) + w (p(z - d) + p(z + d))``
  with ``w = z_context_weight``. At the first and last slice the missing side is left out and the weights
  renormalized. A one-slice flicker (an organ that appears in one slice only) loses its vote.
* **Largest connected component** (:func:`keep_largest_components`, ``largest_component=True``): every FLARE
  organ is one connected structure, so for each label only its largest 3D component (26-connectivity, in
  voxels of the input's grid) is kept and the rest becomes background, as nnU-Net's post-processing does.
  *Paired organs* are two labels in FLARE 2022 (right kidney 2 / left kidney 13, right adrenal 7 / left adrenal
  8), so each side keeps its own largest component: never one kidney for both. *Tubular organs* (aorta 5, IVC 6,
  oesophagus 10, duodenum 12) can be cut in two by a single slice the model missed; they keep every component
  with at least :data:`TUBULAR_KEEP_FRACTION` of the largest one's voxels. The rule is stated, not fitted.

Both are recorded in a model folder's ``postprocessing.json`` (:class:`PostprocessingConfig`) by
``smp-diffusion finetune``, which enables them by default only where they helped on validation data
(``benchmarks/results/recipe_transfer.md``), and are applied by ``predict``. Probability and uncertainty maps
that ``predict`` saves are the z-averaged probabilities, before the component step.

Example:
    >>> labels = np.zeros((3, 8, 8), np.uint8); labels[:, 1:4, 1:4] = 1; labels[1, 6, 6] = 1   # a speck
    >>> int(keep_largest_components(labels)[1, 6, 6])
    0
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy import ndimage

from smp_diffusion_encoder.errors import ConfigError

#: FLARE 2022 ids of tubular organs: aorta, IVC, oesophagus, duodenum.
TUBULAR_ORGANS: frozenset[int] = frozenset({5, 6, 10, 12})
#: A tubular organ keeps every component with at least this share of its largest component's voxels.
TUBULAR_KEEP_FRACTION = 0.2


@dataclass(frozen=True)
class PostprocessingConfig:
    """What ``predict`` does after the model (see the module docstring); the default does nothing.

    Attributes:
        largest_component: keep each organ's largest 3D connected component (tubular organs: large ones).
        z_context_mm: average probabilities with the slices this many mm above and below (0: off).
        z_context_weight: weight ``w`` of each neighbour (``0 < w < 0.5``).
    """

    largest_component: bool = False
    z_context_mm: float = 0.0
    z_context_weight: float = 0.25

    def __post_init__(self) -> None:
        if not isinstance(self.largest_component, bool):
            raise ConfigError(f"largest_component must be true or false, got {self.largest_component!r}")
        for name in ("z_context_mm", "z_context_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name} must be a number, got {value!r}")
        if not (np.isfinite(self.z_context_mm) and 0.0 <= self.z_context_mm <= 100.0):
            raise ConfigError(f"z_context_mm must be in [0, 100] mm, got {self.z_context_mm!r}")
        if not 0.0 < self.z_context_weight < 0.5:
            raise ConfigError(f"z_context_weight must be in (0, 0.5), got {self.z_context_weight!r}")

    @property
    def needs_volume(self) -> bool:
        """Whether a slice's result depends on other slices (then a volume is predicted whole)."""
        return self.largest_component or self.z_context_mm > 0

    def describe(self) -> str:
        """One line for reports."""
        steps = []
        if self.z_context_mm > 0:
            steps.append(
                f"probabilities averaged with the slices {self.z_context_mm:g} mm above and below "
                f"(weight {self.z_context_weight:g} each)"
            )
        if self.largest_component:
            steps.append(
                "largest 3D connected component per organ (tubular organs: components >= "
                f"{TUBULAR_KEEP_FRACTION:.0%} of the largest)"
            )
        return "; ".join(steps) if steps else "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PostprocessingConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown postprocessing keys {unknown}; expected some of {sorted(known)}")
        return cls(**d)


def smooth_along_z(
    probabilities: np.ndarray, spacing_mm: float, distance_mm: float, weight: float = 0.25
) -> np.ndarray:
    """``(Z, K, H, W)`` probabilities of slices ``spacing_mm`` apart -> the same, averaged along z (see the
    module docstring). ``distance_mm <= 0`` returns the input unchanged."""
    p = np.asarray(probabilities, dtype=np.float32)
    if p.ndim != 4:
        raise ConfigError(f"smooth_along_z needs (Z, K, H, W) probabilities, got {p.shape}")
    if distance_mm <= 0 or p.shape[0] < 2:
        return p
    if not spacing_mm > 0:
        raise ConfigError(f"slice spacing must be > 0 mm, got {spacing_mm}")
    z = p.shape[0]
    offset = distance_mm / spacing_mm  # in slices
    out = np.empty_like(p)
    for i in range(z):
        total, acc = 1.0 - 2.0 * weight, (1.0 - 2.0 * weight) * p[i]
        for pos in (i - offset, i + offset):
            if pos < 0 or pos > z - 1:
                continue
            lo = int(np.floor(pos))
            hi, frac = min(lo + 1, z - 1), pos - lo
            acc = acc + weight * ((1.0 - frac) * p[lo] + frac * p[hi])
            total += weight
        out[i] = acc / total
    return out


def keep_largest_components(labels: np.ndarray) -> np.ndarray:
    """``(Z, Y, X)`` label ids -> a copy where each organ keeps its largest 26-connected component (tubular
    organs: every component with >= :data:`TUBULAR_KEEP_FRACTION` of the largest's voxels); the rest is 0."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ConfigError(f"keep_largest_components needs a (Z, Y, X) label map, got {labels.shape}")
    out = labels.copy()
    structure = np.ones((3, 3, 3), dtype=bool)
    for organ in np.unique(labels):
        if organ == 0:
            continue
        mask = labels == organ
        components, n = ndimage.label(mask, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(components.ravel())[1:]
        if int(organ) in TUBULAR_ORGANS:
            keep = np.flatnonzero(sizes >= TUBULAR_KEEP_FRACTION * sizes.max()) + 1
        else:
            keep = np.array([int(np.argmax(sizes)) + 1])
        out[mask & ~np.isin(components, keep)] = 0
    return out
