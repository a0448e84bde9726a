"""The ``ddpm-ct`` encoders for segmentation_models_pytorch.

Encoder contract (smp): ``forward(x)`` with ``x`` of shape ``(B, in_channels, H, W)`` in [-1, 1] (CT
windowed as in the weights' preprocessing config; any H, W: padded inside to a multiple of 32, maps cropped
to ``ceil(H / s) x ceil(W / s)``) returns ``depth + 1`` maps at strides ``1, 2, 4, ..., 2**depth``.
Unlike ImageNet CNNs, the stride-1 map is a real feature map (the U-Net decoder's full-resolution block), not
the input. ``out_channels`` lists their channel counts (``len(timesteps) * block channels``, derived, never
typed in).

``output_stride`` 8/16 (DeepLab family): maps deeper than the stride are bilinearly upsampled to it
instead of dilating convolutions (dilation would change what the pretrained U-Net computes).

The encoder, and every smp model smp itself declares scriptable, compiles with ``torch.jit.script``,
``torch.export``, ``torch.compile(fullgraph=True, dynamic=True)`` and ``torch.fx`` with eager's outputs
(``tests/encoder/test_smp_host_tests.py``, smp's own encoder and model testers).
"""

# No `from __future__ import annotations`: torch.fx copies forward's annotations into the code it generates,
# and TorchScript (scripting a traced model, as timm's tests do) needs them as types, not strings.

from typing import Any

import torch
from segmentation_models_pytorch.encoders._base import EncoderMixin

from smp_diffusion_encoder.encoder.features import FeaturePyramid


class DDPMEncoder(FeaturePyramid, EncoderMixin):
    """smp encoder over a diffusion U-Net; built by ``smp.create_model(..., encoder_name="ddpm-ct")``.

    Example:
        >>> import segmentation_models_pytorch as smp, smp_diffusion_encoder
        >>> model = smp.Unet("ddpm-ct-tiny", encoder_weights=None, in_channels=1, classes=14)
        >>> model(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 14, 64, 64])
    """

    _is_torch_scriptable = True  # smp's own encoder tests hold every flag to what it claims
    _is_torch_exportable = True
    _is_torch_compilable = True

    def __init__(self, unet: dict[str, Any], features: dict[str, Any], depth: int = 5, output_stride: int = 32) -> None:
        FeaturePyramid.__init__(self, unet, features, depth=depth, output_stride=output_stride)
        self._depth = self.depth
        self._in_channels = self.unet.config.in_channels
        self._output_stride = output_stride
        self._out_channels = list(self.channels)

    def set_in_channels(self, in_channels: int, pretrained: bool = True) -> None:
        """Adapt the 1-channel stem (smp's default patch assumes a 3-channel one)."""
        self.adapt_in_channels(in_channels)
        self._in_channels = in_channels

    def make_dilated(self, output_stride: int) -> None:
        if output_stride not in (8, 16):
            raise ValueError(f"Output stride should be 16 or 8, got {output_stride}.")
        self.output_stride_cap = output_stride
        self._output_stride = output_stride

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        return self.pyramid(x)
