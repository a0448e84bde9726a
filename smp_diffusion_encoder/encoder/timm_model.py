"""The encoder as a timm model class (``timm.create_model("ddpm_ct_unet", features_only=True)`` builds it).

The timm names, their default configs and entry points are written by
:mod:`smp_diffusion_encoder.registry.timm_names`; this module holds the ``nn.Module`` only.

A diffusion U-Net needs a timestep, so timm's default feature wrapper (which calls every child as
``module(x)``) cannot work; the models use getter-style extraction: ``forward_intermediates`` returns the
multi-timestep pyramid (timesteps live inside the model) and ``features_only`` wraps it with
``FeatureGetterNet``. ``feature_info`` reports strides 1..32, so smp's ``tu-`` path treats the pyramid as
"VGG style" and feeds the real stride-1 features to its decoders.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models._features import feature_take_indices
from torch import nn

from smp_diffusion_encoder.encoder.features import FeaturePyramid


class DDPMCTUNet(FeaturePyramid):
    """timm-style model: ``forward_features`` -> the deepest (stride-32) map, ``forward_head`` -> pooled (+ linear).

    As timm's contract asks, ``model(x)`` uses every parameter and computes only what its output needs: the
    entry points (:mod:`smp_diffusion_encoder.registry.timm_names`) build it with ``head_only=True``, which
    keeps only the U-Net blocks the stride-32 map needs (:meth:`truncate_after`); ``features_only=True`` builds
    the whole pyramid and keeps what the requested ``out_indices`` need (:meth:`prune_intermediate_layers`).
    Weights of the whole pyramid load into a pruned model (the pruned blocks' tensors are skipped).

    Example:
        >>> import timm, smp_diffusion_encoder
        >>> m = timm.create_model("ddpm_ct_unet_tiny", num_classes=0, global_pool="")
        >>> tuple(m(torch.zeros(1, 1, 64, 64)).shape)   # the unpooled stride-32 map: 3 timesteps x 32 channels
        (1, 96, 2, 2)
    """

    def __init__(
        self,
        unet: str | dict[str, Any],
        features: dict[str, Any] | None = None,
        in_chans: int = 1,
        num_classes: int = 0,
        global_pool: str = "avg",
        output_stride: int = 32,
        drop_rate: float = 0.0,
        head_only: bool = False,
    ) -> None:
        super().__init__(unet, features, output_stride=output_stride, in_channels=in_chans)
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = self.channels[-1]
        self.feature_info = [
            dict(num_chs=c, reduction=s, module=f"unet.output_blocks.{blocks[-1]}")
            for c, s, blocks in zip(self.channels, self.strides, self._blocks_by_stride)
        ]
        self.drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes, global_pool)
        if head_only:
            self.truncate_after(self.last_level)

    @property
    def last_level(self) -> int:
        return len(self.strides) - 1

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's intermediates API: the pyramid maps ``indices`` (strides ``2**i``), computed together; with
        ``intermediates_only=False`` also the final (stride-32) map."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r} is not supported, only 'NCHW'")
        take, _ = feature_take_indices(len(self.strides), indices)
        levels = sorted(set(take) | (set() if intermediates_only else {self.last_level}))
        maps = dict(zip(levels, self.pyramid(x, levels)))
        inter = [maps[i] for i in take]
        return inter if intermediates_only else (maps[self.last_level], inter)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep only the U-Net blocks the maps ``indices`` need (and drop the classifier with ``prune_head``)."""
        take, _ = feature_take_indices(len(self.strides), indices)
        if prune_head:
            self.reset_classifier(0, "")
        self.truncate_after(min(take))
        return take

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new head; ``global_pool=""`` returns the unpooled map (no flattening), as every timm model does."""
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-32 map ``(B, num_features, ceil(H / 32), ceil(W / 32))``; nothing finer is computed."""
        return self.pyramid(x, [self.last_level])[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.global_pool(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
