"""The paper's "linear classification" head, applied at native feature resolution.

Huang et al. (after Baranchuk et al.) classify each pixel linearly from the concatenation of all feature
maps bilinearly upsampled to the image size: ``logits = W @ cat_s(up(f_s)) + b`` with ``W`` of shape
``(C, D)``, ``D = sum_s C_s``. Bilinear upsampling acts on each channel separately and linearly, so it
commutes with a 1x1 convolution: ``W @ cat_s(up(f_s)) = sum_s up(W_s @ f_s)`` where ``W_s`` is the block
of ``W``'s columns belonging to stride ``s``. :class:`LinearProbe` computes the right-hand side: one 1x1
conv per stride at native resolution, then only ``C`` logit channels are upsampled and summed. It is the
same classifier (same parameters, same outputs to float rounding) without the ``(B, D, H, W)`` stack,
which for ``D = 8448`` at 256x256 is 2.2 GB per image in float32.

Dense layout (the naive classifier's): ``weight (C, D)`` whose columns follow the maps in list order
(ascending stride; inside a map, the encoder's channel order: timestep-major), and ``bias (C,)``.
:meth:`LinearProbe.dense_weight` / :meth:`LinearProbe.load_dense` convert; :func:`naive_linear_logits`
is the reference implementation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from smp_diffusion_encoder.errors import ConfigError


class LinearProbe(nn.Module):
    """Per-pixel linear classifier on multi-scale features: maps ``[(B, C_s, H/s, W/s)]`` -> ``(B, K, H, W)``.

    Args:
        channels: channels ``C_s`` of each map (``DiffusionFeatureEncoder.channels``).
        strides: stride of each map (``DiffusionFeatureEncoder.strides``); recorded for checking shapes.
        num_classes: ``K`` output classes (14 for FLARE: background + 13 organs).

    Example:
        >>> probe = LinearProbe(channels=(8, 16), strides=(1, 2), num_classes=3)
        >>> feats = [torch.randn(2, 8, 32, 32), torch.randn(2, 16, 16, 16)]
        >>> probe(feats, (32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, channels: Sequence[int], strides: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.strides = tuple(int(s) for s in strides)
        self.num_classes = int(num_classes)
        if not self.channels or len(self.channels) != len(self.strides):
            raise ConfigError(f"need one stride per map: channels {self.channels}, strides {self.strides}")
        if min(self.channels) < 1 or min(self.strides) < 1 or self.num_classes < 1:
            raise ConfigError(
                f"channels, strides and num_classes must be positive: {self.channels}, {self.strides}, {num_classes}"
            )
        self.convs = nn.ModuleList(nn.Conv2d(c, self.num_classes, 1, bias=False) for c in self.channels)
        self.bias = nn.Parameter(torch.zeros(self.num_classes))
        self.reset_parameters()

    @property
    def in_features(self) -> int:
        """``D``: the length of the concatenated per-pixel feature vector."""
        return sum(self.channels)

    def reset_parameters(self) -> None:
        """Initialize as ``nn.Linear(D, K)`` would (uniform in ``+-1/sqrt(D)``): the same classifier at init."""
        bound = self.in_features**-0.5
        for conv in self.convs:
            nn.init.uniform_(conv.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, features: Sequence[torch.Tensor], out_size: tuple[int, int] | Sequence[int]) -> torch.Tensor:
        """``features``: one ``(B, C_s, h_s, w_s)`` map per stride (any float dtype; cast to the weights').

        Returns float logits ``(B, num_classes, *out_size)``: each stride's 1x1-conv logits upsampled
        bilinearly (``align_corners=False``) to ``out_size`` and summed, plus the bias.
        """
        if len(features) != len(self.convs):
            raise ConfigError(
                f"probe expects {len(self.convs)} feature maps (strides {self.strides}), got {len(features)}"
            )
        size = (int(out_size[0]), int(out_size[1]))
        out: torch.Tensor | None = None
        for f, conv in zip(features, self.convs):
            logits = conv(f.to(conv.weight.dtype))
            if tuple(logits.shape[-2:]) != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            out = logits if out is None else out + logits
        assert out is not None
        return out + self.bias.view(1, -1, 1, 1)

    def dense_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight (K, D), bias (K,))`` of the equivalent classifier on the concatenated upsampled stack."""
        weight = torch.cat([conv.weight.flatten(1) for conv in self.convs], dim=1)
        return weight.detach().clone(), self.bias.detach().clone()

    @torch.no_grad()
    def load_dense(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Load a naive classifier's ``weight`` (``(K, D)`` or conv-shaped ``(K, D, 1, 1)``) and ``bias (K,)``."""
        weight = weight.reshape(weight.shape[0], -1)
        if tuple(weight.shape) != (self.num_classes, self.in_features) or tuple(bias.shape) != (self.num_classes,):
            raise ConfigError(
                f"dense weights {tuple(weight.shape)} / bias {tuple(bias.shape)} do not fit a probe with "
                f"K={self.num_classes}, D={self.in_features}"
            )
        for conv, w in zip(self.convs, weight.split(list(self.channels), dim=1)):
            conv.weight.copy_(w.reshape(conv.weight.shape))
        self.bias.copy_(bias)

    @classmethod
    def from_dense(
        cls, weight: torch.Tensor, bias: torch.Tensor, channels: Sequence[int], strides: Sequence[int]
    ) -> LinearProbe:
        """A probe holding a naive classifier's ``weight (K, D)`` and ``bias (K,)``."""
        probe = cls(channels, strides, weight.shape[0])
        probe.load_dense(weight, bias)
        return probe


def naive_linear_logits(
    features: Sequence[torch.Tensor],
    out_size: tuple[int, int] | Sequence[int],
    weight: torch.Tensor,
    bias: torch.Tensor,
) -> torch.Tensor:
    """Reference: upsample every map to ``out_size``, concatenate ``(B, D, H, W)``, apply one 1x1 conv.

    ``weight``: ``(K, D)`` or ``(K, D, 1, 1)``; ``bias``: ``(K,)``. Returns ``(B, K, H, W)``. Memory grows
    with ``B * D * H * W``: use only for checking and for the memory benchmark.
    """
    size = (int(out_size[0]), int(out_size[1]))
    stack = torch.cat(
        [F.interpolate(f.to(weight.dtype), size=size, mode="bilinear", align_corners=False) for f in features], dim=1
    )
    return F.conv2d(stack, weight.reshape(weight.shape[0], -1, 1, 1), bias)
