"""The fine-tuning job's settings (``smp-diffusion finetune``; :func:`~smp_diffusion_encoder.finetune.api.finetune`).

One frozen dataclass, no torch: the command line is built from it and ``DIR/config.json`` records it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from smp_diffusion_encoder import _options
from smp_diffusion_encoder._options import PRECISIONS, Precision, device_option, option
from smp_diffusion_encoder.data.augment import STRENGTHS
from smp_diffusion_encoder.data.splits import LabelBudget
from smp_diffusion_encoder.errors import ConfigError

Method = Literal["probe", "mlp", "unet"]


@dataclass(frozen=True)
class FinetuneConfig:
    """What is trained on the labeled slices, and how.

    Example:
        >>> FinetuneConfig(method="probe", budget="4").resolved_lr
        0.01
    """

    method: Method = option(
        "unet",
        "head: probe (the paper's linear classifier on frozen features), mlp "
        "(Baranchuk's MLP ensemble) or unet (an smp decoder on the frozen encoder)",
    )
    encoder: str = option(
        "ddpm-ct",
        "smp encoder name (probe and mlp need a ddpm-ct encoder; unet takes any, e.g. resnet34 for a baseline)",
    )
    encoder_weights: str | None = option(
        "auto", "weights key; auto: the encoder's default CT weights when it has them, else random; none: random"
    )
    architecture: str = option("Unet", "smp architecture of the decoder (method unet)")
    decoder_channels: tuple[int, ...] | None = option(
        None, "channels of a Unet-family decoder's blocks, coarse to fine (none: smp's 256 128 64 32 16)", metavar="C"
    )
    budget: str = option(
        "4", "label budget: a slice count (4), a share of the labeled slices (1%), whole cases (2cases) or all"
    )
    seed: int = option(0, "seed of the split and the initialization")
    steps: int | None = option(
        None,
        "optimizer steps (none: from the schedule rule: the amount of labeled data "
        "and the head, see smp_diffusion_encoder.finetune.schedule)",
    )
    steps_scale: float = option(1.0, "multiplies the rule's length (e.g. 2 to check that a run had converged)")
    lr: float | None = option(
        None,
        "peak learning rate of AdamW (none: 1e-2 probe, 1e-3 mlp and unet); linear warm-up, then cosine decay to 0",
    )
    batch_size: int | None = option(None, "slices per step (none: 4); pixels per member and step for mlp (none: 2048)")
    image_size: int | None = option(None, "model input size in pixels (none: the encoder's preprocessing)")
    val_fraction: float = option(
        0.0,
        "share of the other labeled slices held out for validation (0: none; "
        "validation slices are labels too, so a few-shot run has none)",
    )
    min_val_slices: int = option(
        8,
        "validate and stop early only with at least this many validation slices; "
        "with fewer, the full schedule runs and the last model is kept",
    )
    patience: int = option(3, "early stopping: validations without improvement")
    augment: Literal["default", "spatial-intensity", "contrast", "none"] = option(
        "default",
        "augmentation of the labeled slices (every head): default = contrast phases (each organ's HU "
        "shifted within its physiological enhancement range; FLARE ids) + nnU-Net's spatial and "
        "intensity set; spatial-intensity = without contrast phases (other label conventions); none",
    )
    augment_views: int | None = option(
        None,
        "views per labeled slice: the slice + augmented copies, each encoded "
        "once (none: 128 views in all, 4..32 per slice)",
    )
    label_table: str | None = option(
        None,
        'JSON file {"segment name": FLARE id} for 3D Slicer .seg.nrrd label '
        "maps (none: the FLARE organ names, e.g. liver, right kidney, RK)",
        metavar="FILE",
    )
    largest_component: bool = option(
        False,
        "predict keeps each organ's largest 3D connected component (tubular "
        "organs: every large one; off: it removed true organs on validation "
        "data); recorded in the model folder",
    )
    z_context_mm: float = option(
        6.0,
        "predict averages each slice's probabilities with the slices this many mm "
        "above and below (0: off; 6 helped on validation data); recorded in the "
        "model folder",
    )
    unfreeze_at: int | None = option(None, "train the encoder too from this step (method unet)")
    encoder_lr_scale: float = option(0.1, "encoder learning rate = lr x this, once unfrozen")
    mlp_members: int = option(10, "MLP ensemble size (method mlp)")
    ensemble: int = option(
        1,
        "train this many models on the same labeled slices (seeds seed, seed+1000, ...) and predict with the "
        "mean of their probabilities (1: one model; 3 gained 0.013 DSC on validation data at 3x the time)",
    )
    pixel_sampling: Literal["balanced", "uniform"] = option(
        "balanced",
        "method mlp: pixels drawn class-balanced (every present class equally often) or uniformly (Baranchuk et al.)",
    )
    device: str = device_option()
    precision: Precision = option(
        "auto",
        "auto: bfloat16 autocast for the encoder's features and the head's training where the device "
        "computes bf16 natively (CUDA; CPUs with AVX512-BF16 or AMX), else fp32",
    )

    def __post_init__(self) -> None:
        if self.method not in ("probe", "mlp", "unet"):
            raise ConfigError(f"method must be 'probe', 'mlp' or 'unet', got {self.method!r}")
        if self.method != "unet" and self.unfreeze_at is not None:
            raise ConfigError(
                f"the {self.method} head trains on cached frozen features: unfreeze_at needs method='unet'"
            )
        if self.augment not in STRENGTHS:
            raise ConfigError(f"augment must be one of {list(STRENGTHS)}, got {self.augment!r}")
        LabelBudget.parse(self.budget)  # raises ConfigError with the accepted forms
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.steps_scale <= 0:
            raise ConfigError(f"steps_scale must be > 0, got {self.steps_scale}")
        if self.decoder_channels is not None:
            object.__setattr__(self, "decoder_channels", tuple(int(c) for c in self.decoder_channels))
            if not self.decoder_channels or min(self.decoder_channels) < 1:
                raise ConfigError(f"decoder_channels must be positive integers, got {self.decoder_channels}")
        if isinstance(self.ensemble, bool) or not isinstance(self.ensemble, int) or self.ensemble < 1:
            raise ConfigError(f"ensemble must be an integer >= 1, got {self.ensemble!r}")
        for name in ("steps", "batch_size", "augment_views"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 or none, got {value}")
        if self.encoder_weights is not None and self.encoder_weights.lower() == "none":
            object.__setattr__(self, "encoder_weights", None)

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else (1e-2 if self.method == "probe" else 1e-3)

    @property
    def resolved_batch_size(self) -> int:
        return self.batch_size if self.batch_size is not None else (2048 if self.method == "mlp" else 4)

    def to_dict(self) -> dict[str, Any]:
        return _options.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FinetuneConfig:
        return _options.from_dict(cls, d, source="fine-tuning config")
