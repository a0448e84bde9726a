"""The few-shot study's settings (:func:`~smp_diffusion_encoder.study.protocol.run_study`,
``benchmarks/fewshot.py``, the demo): one frozen dataclass, no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smp_diffusion_encoder import _options
from smp_diffusion_encoder._options import device_option, option
from smp_diffusion_encoder.data.splits import LabelBudget
from smp_diffusion_encoder.errors import ConfigError


@dataclass(frozen=True)
class StudyConfig:
    """Budgets x seeds of a study, how its held-out data is chosen, and where it runs.

    Example:
        >>> StudyConfig(budgets=("4", "all"), seeds=(0,)).budgets
        ('4', 'all')
    """

    budgets: tuple[str, ...] = option(
        ("4", "8", "16", "all"), "label budgets (slice counts, 1%, 2cases, all)", metavar="BUDGET"
    )
    seeds: tuple[int, ...] = option((0, 1, 2), "seeds: each gives its own slices and initialization", metavar="SEED")
    image_size: int | None = option(None, "model input size for every method (none: each encoder's own)")
    test_cases: int = option(10, "labeled cases held out whole when the root has several")
    block: int = option(8, "one labeled case: z blocks of this many train and evaluated slices alternate")
    gap: int = option(2, "one labeled case: slices dropped between train and evaluated blocks")
    holdout_seed: int = option(0, "seed of the held-out choice (cases or the block phase)")
    label_table: str | None = option(
        None,
        'JSON file {"segment name": FLARE id} for 3D Slicer .seg.nrrd label maps (none: the FLARE organ names)',
        metavar="FILE",
    )
    keep_models: bool = option(False, "keep every run's model folder and checkpoint")
    device: str = device_option()
    precision: str = option(
        "auto",
        "auto: bfloat16 autocast for features, training and prediction where the device "
        "computes bf16 natively (CUDA; CPUs with AVX512-BF16 or AMX), else fp32; or "
        "fp32, bf16",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "budgets", tuple(str(b) for b in self.budgets))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.budgets or not self.seeds:
            raise ConfigError("a study needs at least one budget and one seed")
        for budget in self.budgets:
            LabelBudget.parse(budget)

    def to_dict(self) -> dict[str, Any]:
        return _options.to_dict(self)


#: The offline demo's study (``smp-diffusion demo``) and the methods it compares.
#: One budget, 4 slices: the default recipe's decoder trains 500 steps (twice release 0.2's) and each step of the
#: 128 px decoder costs about 0.3 s on an idle 2-core CPU, so a second budget would not fit the demo's 6 minutes.
#: The budget curve (4, 8, 16, all slices, 3 seeds) is in ``benchmarks/results/recipe_transfer.md``.
DEMO_STUDY = StudyConfig(budgets=("4",), seeds=(0,))
#: The product's head (the frozen pretrained encoder + an smp Unet decoder) with the default recipe and with
#: release 0.2's (no augmentation, no post-processing): what the recipe changes on a scan unlike the labeled one.
#: Other heads, the random-weight and resnet34 baselines and larger budgets are in the benchmarks
#: (``benchmarks/fewshot.py``); with them the demo would not fit its 6 minutes on a 2-core CPU.
DEMO_METHODS: tuple[str, ...] = ("ddpm-unet", "ddpm-unet-noaug")
#: Every method :func:`~smp_diffusion_encoder.study.protocol.standard_methods` defines.
STANDARD_METHODS: tuple[str, ...] = (
    "ddpm-probe",
    "ddpm-mlp",
    "ddpm-mlp-uniform",
    "ddpm-unet",
    "ddpm-unet-noaug",
    "ddpm-unet-nocontrast",
    "ddpm-unet-contrast",
    "ddpm-unet-ft",
    "random-unet",
    "random-probe",
    "resnet34-scratch",
)
