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
    """timm-style model: ``forward_features`` -> deepest map, ``forward_head`` -> pooled (+ linear) output."""

    def __init__(
        self,
        unet: str | dict[str, Any],
        features: dict[str, Any] | None = None,
        in_chans: int = 1,
        num_classes: int = 0,
        global_pool: str = "avg",
        output_stride: int = 32,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__(unet, features, output_stride=output_stride, in_channels=in_chans)
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = self.channels[-1]
        self.feature_info = [
            dict(num_chs=c, reduction=s, module=f"unet.output_blocks.{blocks[-1]}")
            for c, s, blocks in zip(self.channels, self.strides, self._blocks_by_stride)
        ]
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r} is not supported, only 'NCHW'")
        take, _ = feature_take_indices(len(self.strides), indices)
        maps = self.pyramid(x)
        inter = [maps[i] for i in take]
        return inter if intermediates_only else (maps[-1], inter)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take, _ = feature_take_indices(len(self.strides), indices)
        if prune_head:
            self.head = nn.Identity()
            self.num_classes = 0
        return take

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pyramid(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.global_pool(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
