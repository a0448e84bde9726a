"""The diffusion U-Net (ADM, guided-diffusion family) for 1-channel CT.

It predicts noise from a noisy image and a timestep, and it can also stop part-way through its decoder
and return chosen decoder-block activations: the features the encoder reuses. It knows nothing about
noise schedules.
"""

from __future__ import annotations

import torch
from torch import nn

from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.models.config import UNetConfig, resolve_config
from smp_diffusion_encoder.models.layers import (
    AttentionBlock,
    Downsample,
    InputConv,
    ResBlock,
    TimestepSequential,
    Upsample,
    timestep_embedding,
)


def check_input_size(x: torch.Tensor, stride: int) -> None:
    """Raise ``ValueError`` unless ``x``'s height and width are multiples of ``stride``.

    A leaf for ``torch.fx`` (registered with ``torch.fx.wrap``): symbolic tracing records the call instead of
    branching on traced sizes, and the traced module checks real inputs.
    """
    if x.shape[-1] % stride or x.shape[-2] % stride:
        raise ValueError(f"input size ({x.shape[-2]}, {x.shape[-1]}) must be a multiple of {stride}")


torch.fx.wrap("check_input_size")


class DiffusionUNet(nn.Module):
    """ADM U-Net: ``forward(x, t)`` maps ``x_t (B, C, H, W)`` and ``t (B,)`` to ``(B, out_channels, H, W)``.

    ``H`` and ``W`` must be multiples of ``config.max_stride``. Decoder blocks are numbered
    ``0 .. config.num_decoder_blocks - 1`` from the coarsest; see :meth:`UNetConfig.decoder_block_stride`.
    Every block is a :class:`~.layers.TimestepSequential` of layers with one signature ``(x, emb)``, so the
    U-Net compiles with TorchScript, ``torch.fx``, ``torch.export`` and ``torch.compile`` alike.

    Example:
        >>> net = DiffusionUNet("tiny")
        >>> eps = net(torch.zeros(2, 1, 64, 64), torch.tensor([10, 500]))
        >>> tuple(eps.shape)
        (2, 1, 64, 64)
    """

    def __init__(self, config: UNetConfig | str | dict) -> None:
        super().__init__()
        cfg = self.config = resolve_config(config)
        mc, emb_dim = cfg.model_channels, 4 * cfg.model_channels
        # the config's numbers that forward needs, as plain ints (TorchScript does not read dataclasses)
        self.model_channels, self.max_stride, self.num_decoder_blocks = mc, cfg.max_stride, cfg.num_decoder_blocks

        def res(cin: int, cout: int, **kw: bool) -> ResBlock:
            return ResBlock(
                cin,
                emb_dim,
                cout,
                dropout=cfg.dropout,
                use_scale_shift_norm=cfg.use_scale_shift_norm,
                norm_groups=cfg.norm_groups,
                **kw,
            )

        def attn(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, num_head_channels=cfg.num_head_channels, norm_groups=cfg.norm_groups)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        self.input_blocks = nn.ModuleList([TimestepSequential(InputConv(cfg.in_channels, mc))])
        skip_channels, ch, stride = [mc], mc, 1
        for level, width in enumerate(cfg.level_channels):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, width)]
                ch = width
                if stride in cfg.attention_strides:
                    layers.append(attn(ch))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_channels.append(ch)
            if level < cfg.num_levels - 1:
                down = res(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch)
                self.input_blocks.append(TimestepSequential(down))
                skip_channels.append(ch)
                stride *= 2

        self.middle_block = TimestepSequential(res(ch, ch), attn(ch), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level in reversed(range(cfg.num_levels)):
            width = cfg.level_channels[level]
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), width)]
                ch = width
                if stride in cfg.attention_strides:
                    layers.append(attn(ch))
                if level > 0 and i == cfg.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch))
                    stride //= 2
                self.output_blocks.append(TimestepSequential(*layers))

        self.out: nn.Sequential | None = nn.Sequential(
            nn.GroupNorm(cfg.norm_groups, ch), nn.SiLU(), nn.Conv2d(ch, cfg.out_channels, 3, padding=1)
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    # ------------------------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        check_input_size(x, self.max_stride)
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(x.dtype))
        skips: list[torch.Tensor] = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        return self.middle_block(h, emb), emb, skips

    @property
    def is_truncated(self) -> bool:
        return self.out is None

    def truncate(self, last_block: int) -> None:
        """Drop decoder blocks after ``last_block`` and the output head (an encoder never runs them).

        Saves memory and keeps every remaining parameter used (as DistributedDataParallel requires).
        A truncated U-Net can still give :meth:`decoder_features` up to ``last_block`` but cannot denoise.
        """
        self.config.decoder_block_stride(last_block)
        self.output_blocks = self.output_blocks[: last_block + 1]
        self.out = None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.out  # a local, so TorchScript knows it is not None below
        if out is None:
            raise RuntimeError("this U-Net was truncated to an encoder and cannot predict noise")
        h, emb, skips = self._encode(x, t)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return out(h)

    @torch.jit.export
    def decoder_features(self, x: torch.Tensor, t: torch.Tensor, blocks: list[int]) -> dict[int, torch.Tensor]:
        """Outputs of the chosen decoder blocks (a list of indices); computation stops after the last one needed.

        Returns ``{block: (B, config.decoder_block_channels(block), H / stride, W / stride)}``.
        """
        out: dict[int, torch.Tensor] = {}
        if len(blocks) == 0:
            return out
        last = max(blocks)
        for b in blocks:
            if b < 0 or b >= self.num_decoder_blocks:
                raise ConfigError(f"decoder block {b} does not exist (0..{self.num_decoder_blocks - 1})")
        if last >= len(self.output_blocks):
            raise ValueError(f"decoder block {last} was removed by truncate()")
        h, emb, skips = self._encode(x, t)
        for i, block in enumerate(self.output_blocks):  # TorchScript unrolls this loop: no break, a guard
            if i <= last:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
                if i in blocks:
                    out[i] = h
        return out
