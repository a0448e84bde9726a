"""The settings of ``smp-diffusion suggest`` (:func:`~smp_diffusion_encoder.labeling.suggest.suggest`): one frozen
dataclass, no torch; the command line is built from it and ``suggestions.json`` records it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from smp_diffusion_encoder import _options
from smp_diffusion_encoder._options import Precision, device_option, option
from smp_diffusion_encoder.errors import ConfigError

#: The uncertainty measures (:mod:`smp_diffusion_encoder.labeling.uncertainty` computes them).
Measure = Literal["error", "entropy", "tta", "dice"]
MEASURES: tuple[str, ...] = get_args(Measure)


@dataclass(frozen=True)
class SuggestConfig:
    """How slices are ranked for labeling (see :mod:`smp_diffusion_encoder.labeling.ranking` for the rule).

    Example:
        >>> SuggestConfig(n=4).measure
        'error'
    """

    n: int = option(8, "slices to suggest")
    measure: Measure = option(
        "error",
        "uncertainty per slice: error = the area (cm² of the model's slice) the model expects to have "
        "labeled wrongly (1 - top probability, summed); entropy = softmax entropy, summed; tta = disagreement "
        "between views shifted by a few pixels and changed in contrast (--tta-views forward passes); dice = "
        "expected Dice loss averaged over the organs on the slice (0-1: weighs small organs like a DSC does)",
    )
    min_distance_mm: float = option(
        15.0,
        "no suggestion closer than this (along z, mm) to a labeled slice or to another suggestion of the same scan",
    )
    scan_decay: float = option(
        0.7,
        "each suggestion already taken from a scan multiplies that scan's other scores "
        "by this (spreads suggestions over scans; 1: no spreading)",
    )
    tta_views: int = option(4, "measure tta: views per slice (the slice itself + shifted, recontrasted copies)")
    seed: int = option(0, "seed of the test-time augmentation and of the order of equal scores")
    sheet_slices: int = option(12, "suggestions shown on the contact sheet (0: no sheet)")
    batch_size: int = option(16, "slices per forward pass")
    device: str = device_option()
    precision: Precision = option(
        "auto",
        "auto: bfloat16 autocast where the device computes bf16 natively (CUDA; CPUs with AVX512-BF16 or "
        "AMX), else fp32",
    )

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"n must be >= 1, got {self.n}")
        if self.measure not in MEASURES:
            raise ConfigError(f"measure must be one of {', '.join(MEASURES)}; got {self.measure!r}")
        if self.min_distance_mm < 0:
            raise ConfigError(f"min_distance_mm must be >= 0, got {self.min_distance_mm}")
        if not 0 < self.scan_decay <= 1:
            raise ConfigError(f"scan_decay must be in (0, 1], got {self.scan_decay}")
        if self.tta_views < 2:
            raise ConfigError(f"tta_views must be >= 2, got {self.tta_views}")
        if self.sheet_slices < 0 or self.batch_size < 1:
            raise ConfigError(
                f"sheet_slices must be >= 0 and batch_size >= 1; got {self.sheet_slices}, {self.batch_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        return _options.to_dict(self)
