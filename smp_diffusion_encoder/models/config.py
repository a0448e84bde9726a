"""Architecture of the diffusion U-Net: one frozen dataclass, written verbatim to ``config.json``.

Every derived number (channels per decoder block, strides, output channels) is computed from these
fields, never stored by hand. Presets:

=========  ==========  ======  ==================  =========  ================  ===========
preset     image size  width   channel_mult        res/level  attention at      parameters
=========  ==========  ======  ==================  =========  ================  ===========
adm-256    256         256     1,1,2,2,4,4         2          32, 16, 8 px      ~552 M
small      128         32      1,1,2,2,4,4         2          16, 8 px          ~8.7 M
tiny       64          8       1,1,2,2,4,4         1          4 px              ~0.1 M
=========  ==========  ======  ==================  =========  ================  ===========

``adm-256`` is guided-diffusion's 256x256 unconditional ADM (the backbone of Baranchuk et al. and Huang
et al.) with a 1-channel CT input. ``small`` is practical on a CPU. ``tiny`` exists for tests.
A committed preset is never changed: weights on disk refer to it by value (the whole dict is saved).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from smp_diffusion_encoder.errors import ConfigError


@dataclass(frozen=True)
class UNetConfig:
    """ADM-style U-Net hyperparameters.

    Attributes:
        image_size: training resolution in pixels. Attention placement is stored relative to it (as
            feature-map sizes at this resolution), so the network runs at any multiple of
            ``2 ** (len(channel_mult) - 1)``.
        in_channels: image channels (1 for CT).
        model_channels: width of the first level; level ``l`` has ``model_channels * channel_mult[l]``.
        channel_mult: one multiplier per resolution level; ``len`` levels give strides 1..2**(len-1).
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more per level).
        attention_resolutions: feature-map sizes (at ``image_size``) that get self-attention.
        num_head_channels: channels per attention head.
        dropout: dropout inside residual blocks.
        learn_sigma: the output also predicts the variance interpolation (2x channels), as in ADM.
        use_scale_shift_norm: FiLM-style time conditioning ``norm(h) * (1 + scale) + shift``.
        resblock_updown: resample with residual blocks instead of strided conv / nearest upsampling.
        norm_groups: GroupNorm groups (must divide every level's width).
    """

    image_size: int = 256
    in_channels: int = 1
    model_channels: int = 256
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    num_head_channels: int = 64
    dropout: float = 0.0
    learn_sigma: bool = True
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    norm_groups: int = 32

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so the dataclass stays hashable and comparable.
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        object.__setattr__(self, "attention_resolutions", tuple(int(r) for r in self.attention_resolutions))
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ConfigError(f"channel_mult must be non-empty positive integers, got {self.channel_mult}")
        if self.image_size % self.max_stride:
            raise ConfigError(f"image_size={self.image_size} is not a multiple of the deepest stride {self.max_stride}")
        for width in set(self.level_channels) | {self.model_channels}:
            if width % self.norm_groups:
                raise ConfigError(f"norm_groups={self.norm_groups} does not divide channel width {width}")
            if width in self.attention_widths and width % self.num_head_channels:
                raise ConfigError(f"num_head_channels={self.num_head_channels} does not divide attention width {width}")
        for res in self.attention_resolutions:
            if self.image_size % res or (self.image_size // res) & (self.image_size // res - 1):
                raise ConfigError(
                    f"attention resolution {res} is not image_size / 2**k for image_size={self.image_size}"
                )

    # ----- derived quantities -------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.channel_mult)

    @property
    def max_stride(self) -> int:
        return 2 ** (self.num_levels - 1)

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.model_channels * m for m in self.channel_mult)

    @property
    def attention_strides(self) -> frozenset[int]:
        """Downsampling factors (strides) at which self-attention is applied."""
        return frozenset(self.image_size // r for r in self.attention_resolutions)

    @property
    def attention_widths(self) -> frozenset[int]:
        return frozenset(
            self.level_channels[lvl] for lvl in range(self.num_levels) if 2**lvl in self.attention_strides
        ) | (frozenset({self.level_channels[-1]}))

    @property
    def num_decoder_blocks(self) -> int:
        return self.num_levels * (self.num_res_blocks + 1)

    def decoder_block_stride(self, block: int) -> int:
        """Stride of decoder block ``block``'s output (the last block of each level but the finest upsamples)."""
        if not 0 <= block < self.num_decoder_blocks:
            raise ConfigError(f"decoder block {block} does not exist (0..{self.num_decoder_blocks - 1})")
        level = self.num_levels - 1 - block // (self.num_res_blocks + 1)
        upsamples = level > 0 and block % (self.num_res_blocks + 1) == self.num_res_blocks
        return 2 ** (level - 1) if upsamples else 2**level

    def decoder_block_channels(self, block: int) -> int:
        self.decoder_block_stride(block)  # validates the index
        level = self.num_levels - 1 - block // (self.num_res_blocks + 1)
        return self.level_channels[level]

    # ----- serialization ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attention_resolutions"] = list(self.attention_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown U-Net config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> UNetConfig:
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, UNetConfig] = {
    "adm-256": UNetConfig(),
    "small": UNetConfig(
        image_size=128,
        model_channels=32,
        attention_resolutions=(16, 8),
        num_head_channels=32,
        norm_groups=16,
    ),
    "tiny": UNetConfig(
        image_size=64,
        model_channels=8,
        num_res_blocks=1,
        attention_resolutions=(4,),
        num_head_channels=8,
        norm_groups=4,
        learn_sigma=False,
    ),
}


def get_preset(name: str) -> UNetConfig:
    """Return a named preset (``adm-256``, ``small``, ``tiny``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown U-Net preset {name!r}; choose from {sorted(PRESETS)}") from None


def resolve_config(config: UNetConfig | str | dict[str, Any]) -> UNetConfig:
    """Accept a config, a preset name, or a ``to_dict()`` dictionary."""
    if isinstance(config, UNetConfig):
        return config
    if isinstance(config, str):
        return get_preset(config)
    if isinstance(config, dict):
        return UNetConfig.from_dict(config)
    raise ConfigError(f"expected UNetConfig, preset name or dict, got {type(config).__name__}")
