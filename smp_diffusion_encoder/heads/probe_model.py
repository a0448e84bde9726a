"""A head on frozen diffusion features as one model: :class:`ProbeModel` (the encoder, then the linear probe or
the MLP ensemble). Saved and loaded as a probe model folder by :mod:`smp_diffusion_encoder.formats.model_folder`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from smp_diffusion_encoder._device import autocast
from smp_diffusion_encoder.encoder.config import FeatureConfig
from smp_diffusion_encoder.encoder.features import DiffusionFeatureEncoder
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.heads.linear_probe import LinearProbe
from smp_diffusion_encoder.heads.mlp_ensemble import EnsembleHead
from smp_diffusion_encoder.models.config import UNetConfig
from smp_diffusion_encoder.models.unet import DiffusionUNet

HeadKind = Literal["linear", "mlp"]


class ProbeModel(nn.Module):
    """Frozen diffusion features + a head: ``(B, 1, H, W)`` in [-1, 1] -> logits ``(B, K, H, W)``.

    The head is a :class:`LinearProbe` or an :class:`~smp_diffusion_encoder.heads.EnsembleHead` (whose
    "logits" are log vote fractions, see there).

    Wraps the encoder the probe was trained on (e.g. the one behind a
    :class:`~smp_diffusion_encoder.heads.FeatureCache`) and truncates its U-Net after the last decoder
    block the features use (it never runs the later ones), so the state dict holds exactly the weights
    in use. :meth:`build` makes a fresh one from configs.

    Example:
        >>> model = ProbeModel.build("tiny", FeatureConfig(timesteps=(50,)), num_classes=14)
        >>> model(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 14, 64, 64])
    """

    def __init__(self, encoder: DiffusionFeatureEncoder, probe: LinearProbe | EnsembleHead) -> None:
        super().__init__()
        if type(encoder) is not DiffusionFeatureEncoder:
            raise ConfigError(f"ProbeModel needs a plain DiffusionFeatureEncoder, got {type(encoder).__name__}")
        if (probe.channels, probe.strides) != (encoder.channels, encoder.strides):
            raise ConfigError(
                f"probe expects channels {probe.channels} at strides {probe.strides}; the encoder gives "
                f"{encoder.channels} at {encoder.strides}"
            )
        encoder.unet.truncate(max(encoder.blocks))
        self.encoder = encoder
        self.probe = probe

    @classmethod
    def build(
        cls,
        unet: UNetConfig | str | dict[str, Any],
        features: FeatureConfig | None,
        num_classes: int,
        *,
        head: HeadKind = "linear",
        num_models: int = 10,
        hidden: tuple[int, ...] = (128, 32),
    ) -> ProbeModel:
        """A new model: ``DiffusionUNet(unet)`` features (random weights) and a head with derived shapes.

        ``num_models`` and ``hidden`` apply to ``head="mlp"`` only.
        """
        encoder = DiffusionFeatureEncoder(DiffusionUNet(unet), features)
        return cls.for_encoder(encoder, num_classes, head=head, num_models=num_models, hidden=hidden)

    @property
    def head_config(self) -> dict[str, Any]:
        """The ``"probe"`` entry of the folder's ``config.json``."""
        out: dict[str, Any] = {
            "kind": "linear" if isinstance(self.probe, LinearProbe) else "mlp",
            "num_classes": self.probe.num_classes,
            "channels": list(self.probe.channels),
            "strides": list(self.probe.strides),
        }
        if isinstance(self.probe, EnsembleHead):
            out.update(num_models=self.probe.ensemble.num_models, hidden=list(self.probe.ensemble.hidden))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(self.encoder(x), x.shape[-2:])

    @classmethod
    def for_encoder(
        cls,
        encoder: DiffusionFeatureEncoder,
        num_classes: int,
        *,
        head: HeadKind = "linear",
        num_models: int = 10,
        hidden: tuple[int, ...] = (128, 32),
    ) -> ProbeModel:
        """A new head (random weights, derived shapes) on ``encoder`` (e.g. one with pretrained weights)."""
        if head == "linear":
            return cls(encoder, LinearProbe(encoder.channels, encoder.strides, num_classes))
        if head == "mlp":
            return cls(encoder, EnsembleHead(encoder.channels, encoder.strides, num_classes, num_models, hidden))
        raise ConfigError(f"head must be 'linear' or 'mlp', got {head!r}")


@torch.no_grad()
def predict_classes(
    head: nn.Module,
    maps: Sequence[torch.Tensor],
    size: tuple[int, int] | torch.Size,
    *,
    precision: str = "fp32",
    batch_size: int = 8,
) -> torch.Tensor:
    """Class ids ``(N, H, W)`` (long, CPU) of a probe or MLP-ensemble ``head`` on cached features: ``maps`` holds one
    ``(N, C_s, h_s, w_s)`` tensor per stride; slices go through in batches of ``batch_size`` on the head's device,
    in eval mode, under ``precision`` (``"bf16"``: bfloat16 autocast)."""
    device = next(head.parameters()).device
    head.eval()  # the MLP ensemble's BatchNorm uses its running statistics
    n = len(maps[0]) if maps else 0
    with autocast(device, precision):
        return torch.cat(
            [
                head([m[i : i + batch_size].to(device) for m in maps], size).argmax(1).cpu()
                for i in range(0, n, batch_size)
            ]
        )


__all__ = ["HeadKind", "ProbeModel", "predict_classes"]
