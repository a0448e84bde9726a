"""The encoder as a timm model class (``timm.create_model("ddpm_ct_unet", features_only=True)`` builds it).

The timm names, their default configs and entry points are written by
:mod:`smp_diffusion_encoder.registry.timm_names`; this module holds the ``nn.Module`` only.

A diffusion U-Net needs a timestep, so timm's default feature wrapper (which calls every child as
``module(x)``) cannot work; the models use getter-style extraction: ``forward_intermediates`` returns the
multi-timestep pyramid (timesteps live inside the model) and ``features_only`` wraps it with
``FeatureGetterNet``. ``feature_info`` reports strides 1..32, so smp's ``tu-`` path treats the pyramid as
"VGG style" and feeds the real stride-1 features to its decoders.
"""

# No `from __future__ import annotations`: torch.fx copies forward's annotations into the code it generates,
# and TorchScript (scripting a traced model, as timm's tests do) needs them as types, not strings.

from typing import Any

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models._features import feature_take_indices
from torch import nn

from smp_diffusion_encoder.encoder.features import FeaturePyramid, sorted_levels
from smp_diffusion_encoder.errors import ConfigError


class DDPMCTUNet(FeaturePyramid):
    """timm-style model: the U-Net's feature trunk, ``forward_features`` -> its last map, ``forward_head`` -> pooled.

    As in timm's CNNs, ``forward_features`` runs the whole trunk and returns its final map, and
    ``forward_intermediates`` returns the stage outputs on the way. The trunk is the U-Net's encoder, middle
    block and decoder up to the last feature block; its stages, in the order they are computed, give the maps at
    strides 32, 16, ..., 2, 1, so the final map is the stride-1 one (``num_features`` = its channels,
    ``pool_size`` = the input size) and ``model(x)`` uses every parameter. ``feature_info`` lists the maps
    by ascending stride (1..32), as decoders expect. :meth:`prune_intermediate_layers` (what
    ``features_only=True`` calls with ``out_indices``) drops the decoder blocks after the finest map kept, and
    the classifier, which needs them.

    Example:
        >>> import timm, smp_diffusion_encoder
        >>> m = timm.create_model("ddpm_ct_unet_tiny", num_classes=0, global_pool="")
        >>> tuple(m(torch.zeros(1, 1, 64, 64)).shape)   # the unpooled stride-1 map: 3 timesteps x 8 channels
        (1, 24, 64, 64)
        >>> [tuple(f.shape[1:]) for f in m.forward_intermediates(torch.zeros(1, 1, 64, 64), indices=[4, 5],
        ...                                                        intermediates_only=True)]
        [(96, 4, 4), (96, 2, 2)]
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
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(unet, features, output_stride=output_stride, in_channels=in_chans, device=device, dtype=dtype)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.feature_info = [
            dict(num_chs=c, reduction=s, module=f"unet.output_blocks.{blocks[-1]}")
            for c, s, blocks in zip(self.channels, self.strides, self._blocks_by_stride)
        ]
        self.num_features = self.channels[self.min_level]
        self.drop_rate = drop_rate
        self.drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes, global_pool)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's intermediates API: the maps ``indices`` (``feature_info`` order: strides ``2**i``), and with
        ``intermediates_only=False`` the final map (``forward_features``; with ``stop_early``, the finest map
        asked for). All come from one pass of the trunk; there is no final norm (``norm`` changes nothing)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt '{output_fmt}' is not supported, only 'NCHW'")
        take, _ = feature_take_indices(len(self._level_strides), indices)
        final = min(take) if stop_early else self.min_level
        levels = take if intermediates_only else take + [final]
        wanted = sorted_levels(levels)
        computed = self.pyramid(x, wanted)
        by_level: dict[int, torch.Tensor] = {}
        for i, level in enumerate(wanted):
            by_level[level] = computed[i]
        intermediates = [by_level[i] for i in take]
        if intermediates_only:
            return intermediates
        return by_level[final], intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep what the maps ``indices`` need: with ``prune_head`` (the default, and what ``features_only``
        asks) the decoder blocks after the finest of them and the classifier go, and the final map becomes the
        finest kept; with ``prune_head=False`` the classifier stays, and so does the whole trunk it reads."""
        take, _ = feature_take_indices(len(self.strides), indices)
        if min(take) < self.min_level:
            raise ConfigError(
                f"feature levels {take} were already pruned: this model keeps levels "
                f"{self.min_level}..{len(self.strides) - 1}"
            )
        if prune_head:
            self.truncate_after(min(take))
            self.num_features = self.channels[self.min_level]
            self.reset_classifier(0, "")
        return take

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new head (on the device and dtype of the model); ``global_pool=""`` returns the unpooled map."""
        ref = next(self.parameters())
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.num_classes = num_classes
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.head = (
            nn.Linear(self.head_hidden_size, num_classes, device=ref.device, dtype=ref.dtype)
            if num_classes
            else nn.Identity()
        )
        self.global_pool.train(self.training)
        self.head.train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final map of the trunk ``(B, num_features, ceil(H / s), ceil(W / s))``: stride ``s = 1`` unless
        pruned (then the finest map kept)."""
        return self.pyramid(x, [self.min_level])[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.global_pool(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
