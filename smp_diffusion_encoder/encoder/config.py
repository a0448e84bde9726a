"""What an encoder computes, as plain data (no torch): the feature selection and the encoder's architecture.

- :class:`FeatureConfig`: which timesteps, decoder blocks and noise make the features.
- :class:`EncoderSpec`: a U-Net architecture plus a feature selection; the ``model_args`` of a weights
  folder's ``config.json``. :meth:`EncoderSpec.differences` is the one architecture comparison of the
  package (weights folders, Hub repos, pretraining runs and registered names are all checked with it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from smp_diffusion_encoder.diffusion.schedule import NoiseSchedule, ScheduleName
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.models.config import UNetConfig, resolve_config

#: U-Net fields that do not change what a truncated encoder computes in eval mode (the noise head's output
#: width and dropout): a run trained with other values exports the same encoder.
ENCODER_NEUTRAL_FIELDS = ("learn_sigma", "dropout")


@dataclass(frozen=True)
class FeatureConfig:
    """Which activations make the features.

    Attributes:
        timesteps: diffusion timesteps (default {50, 150, 250}, the paper's).
        blocks: decoder block indices; ``None`` picks one block per stride (``default_blocks``).
            Baranchuk's choice for the 256 ADM is ``(5, 6, 7, 8, 12)``.
        noise_seed: seed of the fixed noise field shared by all images and timesteps.
        num_noise: noise draws averaged per feature (1 = the paper's single fixed draw).
        schedule: the noise schedule the U-Net was trained with.
        num_timesteps: its number of steps ``T``.
    """

    timesteps: tuple[int, ...] = (50, 150, 250)
    blocks: tuple[int, ...] | None = None
    noise_seed: int = 0
    num_noise: int = 1
    schedule: ScheduleName = "linear"
    num_timesteps: int = 1000

    def __post_init__(self) -> None:
        object.__setattr__(self, "timesteps", tuple(int(t) for t in self.timesteps))
        if self.blocks is not None:
            object.__setattr__(self, "blocks", tuple(sorted({int(b) for b in self.blocks})))
        if not self.timesteps:
            raise ConfigError("FeatureConfig.timesteps must not be empty")
        if self.num_noise < 1:
            raise ConfigError(f"num_noise must be >= 1, got {self.num_noise}")
        NoiseSchedule(self.schedule, self.num_timesteps).validate_timesteps(self.timesteps)

    def resolved_blocks(self, unet: UNetConfig) -> tuple[int, ...]:
        """The block indices in use: ``blocks``, or one block per stride (:func:`default_blocks`)."""
        blocks = self.blocks if self.blocks is not None else default_blocks(unet)
        for b in blocks:
            unet.decoder_block_stride(b)
        return blocks

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["timesteps"] = list(self.timesteps)
        d["blocks"] = None if self.blocks is None else list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        if set(d) - known:
            raise ConfigError(f"unknown feature config keys {sorted(set(d) - known)}; known: {sorted(known)}")
        return cls(**d)


def default_blocks(unet: UNetConfig) -> tuple[int, ...]:
    """One decoder block per stride: the block whose output the U-Net hands to the next finer level.

    For stride ``2**l`` (l < deepest) that is the upsampling block of level ``l+1`` (for the 256 ADM:
    blocks 14, 11, 8, 5, 2 at strides 1..16; 5 and 8 are in Baranchuk's set); for the deepest stride it
    is the last block before the upsampling one.
    """
    r = unet.num_res_blocks + 1
    deepest = unet.num_levels - 1
    blocks = [(deepest - (lvl + 1)) * r + (r - 1) for lvl in range(deepest)]
    blocks.append(r - 2 if r >= 2 else 0)
    return tuple(sorted(blocks))


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder's architecture: ``unet`` (a :class:`UNetConfig`, preset name or dict) and ``features``.

    ``to_dict()`` is the ``model_args`` of a weights folder's ``config.json``.

    Example:
        >>> a = EncoderSpec("tiny", FeatureConfig())
        >>> a.differences(EncoderSpec("tiny", FeatureConfig(timesteps=(50,))))
        ['features.timesteps: [50, 150, 250] vs [50]']
    """

    unet: UNetConfig
    features: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "unet", resolve_config(self.unet))  # type: ignore[arg-type]
        if isinstance(self.features, dict):
            object.__setattr__(self, "features", FeatureConfig.from_dict(self.features))

    def to_dict(self) -> dict[str, Any]:
        return {"unet": self.unet.to_dict(), "features": self.features.to_dict()}

    @classmethod
    def from_dict(cls, model_args: Any) -> EncoderSpec:
        """Inverse of :meth:`to_dict`; a missing ``features`` means the default. Raises :class:`ConfigError`."""
        if not isinstance(model_args, dict) or "unet" not in model_args:
            raise ConfigError(f"model_args must be an object with 'unet' (and 'features'), got {model_args!r}")
        try:
            return cls(
                UNetConfig.from_dict(model_args["unet"]), FeatureConfig.from_dict(model_args.get("features") or {})
            )
        except TypeError as err:
            raise ConfigError(f"invalid model_args ({err})") from err

    def differences(self, other: EncoderSpec, *, ignore_neutral: bool = False) -> list[str]:
        """``["unet.field: mine vs other", ...]`` for every field that differs (``[]``: the same encoder).

        ``ignore_neutral`` skips :data:`ENCODER_NEUTRAL_FIELDS`, which do not change the encoder's output.
        """
        out = []
        for part in ("unet", "features"):
            mine, theirs = getattr(self, part).to_dict(), getattr(other, part).to_dict()
            for key in mine:
                if part == "unet" and ignore_neutral and key in ENCODER_NEUTRAL_FIELDS:
                    continue
                if mine[key] != theirs.get(key):
                    out.append(f"{part}.{key}: {mine[key]!r} vs {theirs.get(key)!r}")
        return out
