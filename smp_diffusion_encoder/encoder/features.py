"""Multi-timestep, multi-scale features of a diffusion U-Net (the heart of the method).

Recipe (Baranchuk et al. 2022; Huang et al. 2024): noise the image to each chosen timestep ``t`` with ONE
fixed, seeded noise tensor (``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps``), run the U-Net and read
activations of chosen decoder blocks. Here all timesteps (and noise draws) run as ONE batched forward,
the U-Net stops after the last block needed, and activations stay at their native resolution, grouped
by stride — nothing is upsampled or materialized at full resolution.

Output: one map per stride present in the selected blocks, ascending (1, 2, 4, ...). Channel layout of a
map: timestep-major, ``[t0: block_a, block_b, ..., t1: block_a, ...]``.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from smp_diffusion_encoder.diffusion.gaussian import GaussianDiffusion
from smp_diffusion_encoder.diffusion.schedule import NoiseSchedule
from smp_diffusion_encoder.encoder.config import EncoderSpec, FeatureConfig
from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.models.config import UNetConfig
from smp_diffusion_encoder.models.layers import InputConv
from smp_diffusion_encoder.models.unet import DiffusionUNet

#: Side length of the canonical noise field; larger inputs tile it.
NOISE_FIELD_SIZE = 256


class DiffusionFeatureEncoder(nn.Module):
    """Image ``(B, C, H, W)`` in [-1, 1] -> list of feature maps, one per stride, ascending.

    Map ``i`` has shape ``(B, len(timesteps) * channels_of_blocks_at(stride_i), H / stride_i, W / stride_i)``.
    The same input always gives the same features (the noise is fixed by ``noise_seed``); gradients
    flow to the U-Net if its parameters require them.

    Example:
        >>> enc = DiffusionFeatureEncoder(DiffusionUNet("tiny"), FeatureConfig(timesteps=(50, 150)))
        >>> enc.strides[:2], enc.channels[:2]   # 2 timesteps x (8 channels at stride 1, 16 at stride 2)
        ((1, 2), (16, 32))
        >>> [tuple(f.shape) for f in enc(torch.zeros(1, 1, 64, 64))][:2]
        [(1, 16, 64, 64), (1, 32, 32, 32)]
    """

    def __init__(
        self, unet: DiffusionUNet, features: FeatureConfig | None = None, *, channels_last: bool = True
    ) -> None:
        super().__init__()
        self.unet = unet
        # Inputs go channels-last (NHWC tensor cores on GPU; oneDNN picks its layout on CPU); the parameters keep
        # the standard layout, so every state dict saves with safetensors as it is (channels-last parameters
        # measured no faster on CPU: benchmarks/results/train_step.md).
        self.channels_last = channels_last
        self.features = features or FeatureConfig()
        cfg = unet.config
        self.blocks = self.features.resolved_blocks(cfg)
        by_stride: dict[int, list[int]] = defaultdict(list)
        for b in self.blocks:
            by_stride[cfg.decoder_block_stride(b)].append(b)
        self.strides: tuple[int, ...] = tuple(sorted(by_stride))
        self._blocks_by_stride = tuple(tuple(by_stride[s]) for s in self.strides)
        n_t = len(self.features.timesteps)
        self.channels: tuple[int, ...] = tuple(
            n_t * sum(cfg.decoder_block_channels(b) for b in bs) for bs in self._blocks_by_stride
        )
        # what forward reads, as plain ints and lists (TorchScript reads neither dataclasses nor ragged tuples)
        self.num_timesteps, self.num_noise = n_t, self.features.num_noise
        self._level_strides: list[int] = list(self.strides)
        self._level_blocks: list[list[int]] = [list(bs) for bs in self._blocks_by_stride]
        diffusion = GaussianDiffusion(NoiseSchedule(self.features.schedule, self.features.num_timesteps))
        a, s = diffusion.coefficients(self.features.timesteps)
        self.register_buffer("timesteps", torch.tensor(self.features.timesteps), persistent=False)
        self.register_buffer("signal_scale", a, persistent=False)
        self.register_buffer("noise_scale", s, persistent=False)
        gen = torch.Generator(device="cpu").manual_seed(self.features.noise_seed)
        field = torch.randn(self.features.num_noise, 1, NOISE_FIELD_SIZE, NOISE_FIELD_SIZE, generator=gen, device="cpu")
        self.register_buffer("noise_field", field, persistent=False)

    def noise(self, height: int, width: int) -> torch.Tensor:
        """The fixed noise ``(num_noise, 1, H, W)``: the seeded field, cropped (or tiled periodically).

        Written without shape-dependent branches so it traces under ``torch.compile``/``torch.export``.
        """
        dev, size = self.noise_field.device, self.noise_field.shape[-1]  # NOISE_FIELD_SIZE, read where TorchScript can
        rows = torch.arange(height, device=dev) % size
        cols = torch.arange(width, device=dev) % size
        return self.noise_field.index_select(2, rows).index_select(3, cols)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.maps(x)

    def maps(self, x: torch.Tensor, levels: list[int] | None = None) -> list[torch.Tensor]:
        """Maps of ``x`` ``(B, C, H, W)`` (H, W multiples of the U-Net's deepest stride).

        ``levels``: indices into :attr:`strides` of the maps wanted (default: all), ascending in the
        output; the U-Net stops after the last decoder block they need (coarse maps are cheap).
        """
        wanted = [i for i in range(len(self._level_blocks))] if levels is None else sorted_levels(levels)
        b, c, h, w = x.shape
        n_t, n_k = self.num_timesteps, self.num_noise
        noise = self.noise(h, w).to(dtype=x.dtype)  # (K, 1, H, W), broadcast over channels
        a = self.signal_scale.to(x.dtype).view(n_t, 1, 1, 1, 1, 1)
        s = self.noise_scale.to(x.dtype).view(n_t, 1, 1, 1, 1, 1)
        x_t = a * x.unsqueeze(0).unsqueeze(0) + s * noise.unsqueeze(0).unsqueeze(2)  # (T, K, B, C, H, W)
        x_t = x_t.reshape(n_t * n_k * b, c, h, w)
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        t = self.timesteps.repeat_interleave(n_k * b)
        needed: list[int] = []
        for level in wanted:
            needed.extend(self._level_blocks[level])
        acts = self.unet.decoder_features(x_t, t, needed)
        out: list[torch.Tensor] = []
        for level in wanted:
            blocks = self._level_blocks[level]
            f = torch.cat([acts[i] for i in blocks], dim=1) if len(blocks) > 1 else acts[blocks[0]]
            # explicit sizes, no *-unpacking: torch.fx can trace this
            f = f.reshape(n_t, n_k, b, f.shape[1], f.shape[2], f.shape[3]).mean(dim=1)  # average noise draws
            out.append(f.permute(1, 0, 2, 3, 4).reshape(b, -1, f.shape[-2], f.shape[-1]))
        return out


class FeaturePyramid(DiffusionFeatureEncoder):
    """A :class:`DiffusionFeatureEncoder` shaped as a segmentation backbone (shared by smp and timm).

    Adds what decoders expect of a backbone: a complete pyramid of strides ``1, 2, ..., 2**depth``, a
    truncated U-Net (decoder blocks after the last one needed and the noise head are removed, so the
    state dict holds exactly the weights in use), input-channel adaptation, and an ``output_stride`` cap.
    State-dict keys are ``unet.*`` for every subclass, so one weights file serves smp and timm.
    """

    def __init__(
        self,
        unet: UNetConfig | str | dict,
        features: FeatureConfig | dict | None = None,
        *,
        depth: int | None = None,
        output_stride: int = 32,
        in_channels: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if isinstance(features, dict):
            features = FeatureConfig.from_dict(features)
        with torch.device(device) if device is not None else contextlib.nullcontext():
            unet_module = DiffusionUNet(unet)  # parameters made where they will live (e.g. "meta": no memory)
        super().__init__(unet_module, features)
        full = tuple(2**i for i in range(len(self.strides)))
        if self.strides != full:
            raise ConfigError(
                f"a backbone needs features at every stride {full}, but blocks {self.blocks} give strides "
                f"{self.strides}; leave FeatureConfig.blocks=None or add blocks for the missing strides"
            )
        max_depth = len(self.strides) - 1
        self.depth = max_depth if depth is None else int(depth)
        if not 1 <= self.depth <= max_depth:
            raise ConfigError(f"depth must be in 1..{max_depth} for this U-Net, got {depth}")
        if output_stride not in (8, 16, 32) or output_stride > 2**max_depth and output_stride != 32:
            raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.output_stride_cap = output_stride
        self.min_level = 0  # the finest map still computable (see truncate_after)
        self.unet.truncate(max(self.blocks))
        if in_channels is not None:
            self.adapt_in_channels(in_channels)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)  # the buffers (noise field, schedule), computed on the CPU

    def adapt_in_channels(self, in_channels: int) -> None:
        """Rebuild the stem for ``in_channels`` inputs by averaging: a grey image repeated on every
        channel gives exactly the 1-channel features (the fixed noise is shared by all channels)."""
        stem = self.unet.input_blocks[0][0]
        if in_channels == stem.in_channels:
            return
        if in_channels < 1:
            raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
        with torch.no_grad():
            mean_w = stem.weight.mean(dim=1, keepdim=True)  # (out, 1, k, k)
            new = InputConv(in_channels, stem.out_channels, device=stem.weight.device, dtype=stem.weight.dtype)
            if not stem.weight.is_meta:
                new.weight.copy_(mean_w.repeat(1, in_channels, 1, 1) * (stem.in_channels / in_channels))
                new.bias.copy_(stem.bias)
        self.unet.input_blocks[0][0] = new

    def pyramid(self, x: torch.Tensor, levels: list[int] | None = None) -> list[torch.Tensor]:
        """Maps at strides ``1 .. 2**depth`` (``levels``: indices of the wanted ones; default all ``depth + 1``).

        Any input size works, as with smp's own encoders: ``x`` ``(B, C, H, W)`` is padded at the bottom and
        right with -1 (air in the [-1, 1] input range) to a multiple of the U-Net's deepest stride, and the
        map at stride ``s`` is cropped to ``(ceil(H / s), ceil(W / s))`` (what a CNN with padded convolutions
        gives), so decoders that upsample to their skips return ``(H, W)``. Maps deeper than
        ``output_stride`` are bilinearly upsampled to it instead (DeepLab's dilation would change what the
        pretrained U-Net computes).
        """
        wanted = [i for i in range(self.depth + 1)] if levels is None else sorted_levels(levels)
        if wanted[0] < self.min_level:
            raise ConfigError(
                f"feature levels {wanted} were pruned (prune_intermediate_layers): this model keeps "
                f"levels {self.min_level}..{len(self._level_strides) - 1}"
            )
        h, w = x.shape[-2], x.shape[-1]
        m = self.unet.max_stride
        padded = nn.functional.pad(x, (0, (-w) % m, 0, (-h) % m), value=-1.0)
        cap = self.output_stride_cap
        maps = self.maps(padded, wanted)
        out: list[torch.Tensor] = []
        for i, level in enumerate(wanted):
            f, stride = maps[i], self._level_strides[level]
            if stride > cap:
                f = nn.functional.interpolate(
                    f, size=[padded.shape[-2] // cap, padded.shape[-1] // cap], mode="bilinear", align_corners=False
                )
                stride = cap
            out.append(f[..., : (h + stride - 1) // stride, : (w + stride - 1) // stride])
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """``nn.Module.load_state_dict``, plus: weights stored for the native 1-channel stem are adapted to a
        stem rebuilt for ``in_channels`` (as :meth:`adapt_in_channels` does), and tensors of decoder blocks this
        model pruned (:meth:`truncate_after`) are skipped, so a whole pyramid's weights load into it."""
        key = "unet.input_blocks.0.0.weight"
        stem = self.unet.input_blocks[0][0]
        state = dict(state_dict)
        if key in state and state[key].shape[1] != stem.in_channels:
            n = stem.in_channels
            w = state[key].float().mean(dim=1, keepdim=True) * state[key].shape[1] / n
            state[key] = w.repeat(1, n, 1, 1).to(state[key].dtype)
        kept = len(self.unet.output_blocks)
        pruned = [k for k in state if k.startswith("unet.output_blocks.") and int(k.split(".")[2]) >= kept]
        for k in pruned:
            del state[k]
        return super().load_state_dict(state, strict=strict, assign=assign)

    def truncate_after(self, level: int) -> None:
        """Drop the decoder blocks the maps up to stride index ``level`` do not need (e.g. ``level = depth``
        keeps only what the deepest map needs); :meth:`pyramid` then serves levels ``>= level`` only."""
        self.unet.truncate(max(self._blocks_by_stride[level]))
        self.min_level = level


def sorted_levels(levels: list[int]) -> list[int]:
    """``sorted(set(levels))``, in the subset of Python that TorchScript compiles."""
    out: list[int] = []
    for level in sorted(levels):
        if len(out) == 0 or out[-1] != level:
            out.append(level)
    return out


def encoder_state_dict(
    state_dict: Mapping[str, torch.Tensor], spec: EncoderSpec, *, source: str, strict: bool = True
) -> dict[str, torch.Tensor]:
    """The :class:`FeaturePyramid` state dict of ``spec`` (``unet.*`` keys, truncated U-Net) from ``state_dict``.

    ``state_dict`` holds an encoder's ``unet.*`` keys or a whole U-Net's bare :class:`DiffusionUNet` keys.
    ``strict`` (a weights file): nothing beyond the pyramid's tensors may be present. Not strict (a U-Net
    from a pretraining run): the decoder blocks after the last feature block and the noise head are dropped.
    Every name and shape is checked; problems raise :class:`WeightsError` naming ``source`` and up to 5
    tensors of each kind. Tensors are returned on the CPU, contiguous.
    """
    with torch.device("meta"):
        ref = FeaturePyramid(spec.unet, spec.features).state_dict()
    prefixed = any(k.startswith("unet.") for k in state_dict)
    given = dict(state_dict) if prefixed else {f"unet.{k}": v for k, v in state_dict.items()}
    missing = sorted(set(ref) - set(given))
    unexpected = sorted(set(given) - set(ref)) if strict else []
    shapes = [
        f"{k} is {tuple(given[k].shape)}, expected {tuple(v.shape)}"
        for k, v in ref.items()
        if k in given and tuple(given[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[:5]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:5]})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: " + "; ".join(shapes[:5]))
    if problems:
        raise WeightsError(f"{source}: weights do not match the encoder architecture: " + ", ".join(problems))
    return {k: given[k].detach().to("cpu").contiguous() for k in ref}
