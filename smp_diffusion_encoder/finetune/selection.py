"""Choosing the encoder's timesteps and decoder blocks for the user's data, with the linear probe.

Baranchuk et al. (ICLR 2022) chose timesteps and decoder blocks per dataset by how well pixel classifiers did
on them. :func:`select_features` does that on the user's labeled slices, cheaply: the frozen U-Net's
activations of every candidate (timestep, block) are computed once for the training and validation slices
(fp16, in memory; the fixed noise of :class:`~smp_diffusion_encoder.encoder.features.DiffusionFeatureEncoder`,
so they are exactly the features an encoder with that selection computes), then a linear probe
(:class:`~smp_diffusion_encoder.heads.LinearProbe`, trained by the shared
:class:`~smp_diffusion_encoder.training.Trainer`) is fitted per candidate selection and scored by mean slice
DSC on the validation slices.

Search (greedy, as the candidate space is large): (1) every candidate timestep alone, with the encoder's
blocks; (2) timesteps added best-first while the score improves, up to ``max_timesteps``; (3) for each stride,
every decoder block at that stride (and all of them together) in place of the current one, kept when it
improves. Every selection keeps at least one block per stride, so the result is a full pyramid that smp and
timm load as usual. The chosen :class:`~smp_diffusion_encoder.encoder.config.FeatureConfig` is written with the
same U-Net weights into a weights folder (``config.json`` + ``model.safetensors`` + ``selection.json`` with every
score), which :func:`~smp_diffusion_encoder.registry.register_encoder_from_folder` registers under a name.

Example:
    >>> result = select_features("data/FLARE22", SelectionConfig(encoder="ddpm-ct"), out_dir="weights/mine")  # doctest: +SKIP
    >>> result.features.timesteps, result.score, result.baseline                                          # doctest: +SKIP
    ((25, 150), 0.61, 0.57)
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smp_diffusion_encoder._device import resolve_device, resolve_precision
from smp_diffusion_encoder._io import atomic_write_json
from smp_diffusion_encoder.data.flare import Case
from smp_diffusion_encoder.data.remap import FLARE_NUM_CLASSES
from smp_diffusion_encoder.data.splits import eligible_slices
from smp_diffusion_encoder.encoder.config import EncoderSpec, FeatureConfig
from smp_diffusion_encoder.encoder.features import DiffusionFeatureEncoder, encoder_state_dict
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.finetune.api import mean_slice_dice
from smp_diffusion_encoder.finetune.batches import slice_batches
from smp_diffusion_encoder.finetune.data import gather, labeled_cases, load_cases
from smp_diffusion_encoder.finetune.selection_config import SelectionConfig
from smp_diffusion_encoder.finetune.steps import ProbeStep
from smp_diffusion_encoder.heads import FeatureCache, LinearProbe
from smp_diffusion_encoder.hub.weights import save_encoder_weights
from smp_diffusion_encoder.models.unet import DiffusionUNet
from smp_diffusion_encoder.registry.records import resolve
from smp_diffusion_encoder.registry.weights import load_weights, preprocessing_for, resolve_weights
from smp_diffusion_encoder.training import TrainConfig, Trainer

SELECTION_NAME = "selection.json"


@dataclass(frozen=True)
class SelectionResult:
    """The chosen ``features``, its validation ``score``, the encoder's own selection's ``baseline`` score,
    every scored candidate (``trials``: ``{"timesteps", "blocks", "score"}``) and the weights folder written."""

    features: FeatureConfig
    score: float
    baseline: float
    trials: list[dict[str, Any]]
    folder: Path


def select_features(
    root_or_cases: str | os.PathLike[str] | Sequence[Case],
    config: SelectionConfig | None = None,
    *,
    out_dir: str | os.PathLike[str],
    pool: Mapping[str, Iterable[int]] | None = None,
    progress: bool = False,
) -> SelectionResult:
    """Search timesteps and decoder blocks (module docstring) and write the best into a weights folder ``out_dir``.

    ``pool``: ``{case_id: z}`` slices the search may use (e.g. the train side of a held-out split).

    Raises:
        ConfigError: an encoder that is not a registered ddpm-ct encoder, too few labeled slices to score.
    """
    config = config or SelectionConfig()
    try:
        record = resolve(config.encoder)
    except KeyError as err:
        raise ConfigError(f"feature selection needs a ddpm-ct encoder: {err.args[0]}") from None
    spec = record.spec
    weights = resolve_weights(config.encoder, config.encoder_weights)
    prep = preprocessing_for(config.encoder, weights)
    volumes = load_cases(labeled_cases(root_or_cases), prep)
    train_pairs, val_pairs = _split(volumes, config, pool)
    train, val = gather(volumes, train_pairs), gather(volumes, val_pairs)
    device = resolve_device(config.device)
    unet = DiffusionUNet(spec.unet)
    base = spec.features.resolved_blocks(spec.unet)
    unet.truncate(max(base))  # what the weights hold: the blocks up to the encoder's last one
    candidates = list(range(max(base) + 1))
    if weights is not None:
        unet.load_state_dict({k.removeprefix("unet."): v for k, v in load_weights(config.encoder, weights).items()})
    unet = unet.to(device, memory_format=torch.channels_last).eval()
    precision = resolve_precision(config.precision, device)
    timesteps = tuple(sorted(set(config.timesteps) | set(spec.features.timesteps)))
    acts = _activations(
        unet, spec.features, timesteps, candidates, train.images, val.images, train.ids + val.ids, precision
    )
    strides = {b: spec.unet.decoder_block_stride(b) for b in candidates}
    trials: list[dict[str, Any]] = []

    def score(ts: Sequence[int], blocks: Sequence[int]) -> float:
        key = (tuple(sorted(ts)), tuple(sorted(blocks)))
        for t in trials:
            if (tuple(t["timesteps"]), tuple(t["blocks"])) == key:
                return float(t["score"])
        value = _probe_score(acts, key[0], key[1], strides, train, val, config, device)
        trials.append({"timesteps": list(key[0]), "blocks": list(key[1]), "score": round(value, 5)})
        if progress:
            print(f"timesteps {key[0]}, blocks {key[1]}: validation DSC {value:.4f}", flush=True)
        return value

    baseline = score(spec.features.timesteps, base)
    singles = sorted(config.timesteps, key=lambda t: -score((t,), base))
    chosen, best = [singles[0]], score((singles[0],), base)
    for t in singles[1:]:
        if len(chosen) >= config.max_timesteps:
            break
        trial = score((*chosen, t), base)
        if trial > best:
            chosen, best = [*chosen, t], trial
    blocks = list(base)
    for stride in sorted({strides[b] for b in base}):
        at_stride = [b for b in candidates if strides[b] == stride]
        for option_blocks in [*([b] for b in at_stride), at_stride]:
            trial_blocks = [b for b in blocks if strides[b] != stride] + option_blocks
            trial = score(chosen, trial_blocks)
            if trial > best:
                blocks, best = trial_blocks, trial
    if baseline >= best:  # nothing beat the encoder's own selection
        chosen, blocks, best = list(spec.features.timesteps), list(base), baseline
    features = dataclasses.replace(spec.features, timesteps=tuple(sorted(chosen)), blocks=tuple(sorted(blocks)))
    folder = _write(out_dir, spec, features, unet, prep, config, best, baseline, trials, record.smp_name)
    return SelectionResult(features, best, baseline, trials, folder)


def _split(
    volumes: Mapping[str, tuple[Any, Any]], config: SelectionConfig, pool: Mapping[str, Iterable[int]] | None
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Alternating z blocks of every labeled case's eligible slices (within ``pool``): train / score."""
    train, val = [], []
    for case_id, (_, labels) in sorted(volumes.items()):
        allowed = None if pool is None else {int(z) for z in pool.get(case_id, ())}
        eligible = [z for z in eligible_slices(labels) if allowed is None or z in allowed]
        period = 2 * (config.block + 1)
        for i, z in enumerate(eligible):
            position = i % period
            if position < config.block:
                train.append((case_id, z))
            elif config.block < position < period - 1:
                val.append((case_id, z))
    if not train or not val:
        raise ConfigError(
            f"feature selection needs labeled slices to train and to score probes: got {len(train)} "
            f"and {len(val)} (block {config.block})"
        )
    return train, val


def _activations(
    unet: DiffusionUNet,
    features: FeatureConfig,
    timesteps: Sequence[int],
    blocks: Sequence[int],
    train: torch.Tensor,
    val: torch.Tensor,
    ids: Sequence[str],
    precision: str,
) -> dict[tuple[int, int], torch.Tensor]:
    """``{(t, block): (N, C, h, w) fp16}`` for the training then validation slices."""
    images = torch.cat([train, val])
    out: dict[tuple[int, int], torch.Tensor] = {}
    for t in timesteps:
        encoder = DiffusionFeatureEncoder(unet, dataclasses.replace(features, timesteps=(t,), blocks=tuple(blocks)))
        # per stride: the stride's blocks concatenated
        maps = FeatureCache(encoder, precision=precision).features(list(ids), images)
        by_stride = dict(zip(encoder.strides, maps))
        for stride, stride_blocks in zip(encoder.strides, encoder._blocks_by_stride):
            sizes = [unet.config.decoder_block_channels(b) for b in stride_blocks]
            for b, part in zip(stride_blocks, by_stride[stride].split(sizes, dim=1)):
                out[(t, b)] = part
    return out


def _probe_score(
    acts: Mapping[tuple[int, int], torch.Tensor],
    timesteps: Sequence[int],
    blocks: Sequence[int],
    strides: Mapping[int, int],
    train: Any,
    val: Any,
    config: SelectionConfig,
    device: torch.device,
) -> float:
    by_stride: dict[int, list[torch.Tensor]] = {}
    for t in timesteps:  # timestep-major, as the encoder lays channels out
        for b in sorted(blocks):
            by_stride.setdefault(strides[b], []).append(acts[(t, b)])
    order = sorted(by_stride)
    maps = [torch.cat(by_stride[s], dim=1) for s in order]
    n = len(train)
    train_maps, val_maps = [m[:n] for m in maps], [m[n:] for m in maps]
    torch.manual_seed(config.seed)
    probe = LinearProbe([m.shape[1] for m in maps], order, FLARE_NUM_CLASSES).to(device)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-2)
    with tempfile.TemporaryDirectory(prefix="smp-diffusion-select-") as tmp:
        trainer = Trainer(
            probe,
            optimizer,
            ProbeStep(),
            TrainConfig(
                max_steps=config.steps,
                out_dir=tmp,
                ckpt_every=0,
                log_every=config.steps,
                ema_decay=None,
                progress=False,
            ),
            device=device,
        )
        trainer.fit(slice_batches(train, train_maps, 4, config.seed, 0, 1, needs_image=False, unfreeze_at=None))
    probe.eval()
    with torch.no_grad():
        pred = torch.cat(
            [
                probe([m[i : i + 8].to(device) for m in val_maps], val.labels.shape[-2:]).argmax(1).cpu()
                for i in range(0, len(val), 8)
            ]
        )
    return mean_slice_dice(val.labels.numpy(), pred.numpy(), FLARE_NUM_CLASSES)


def _write(
    out_dir: str | os.PathLike[str],
    spec: EncoderSpec,
    features: FeatureConfig,
    unet: DiffusionUNet,
    prep: Any,
    config: SelectionConfig,
    best: float,
    baseline: float,
    trials: list[dict[str, Any]],
    source: str,
) -> Path:
    chosen = EncoderSpec(spec.unet, features)
    state = encoder_state_dict(
        {f"unet.{k}": v for k, v in unet.state_dict().items()}, chosen, source=source, strict=False
    )
    notes = (
        f"features selected by smp-diffusion select-features from {source}: timesteps {list(features.timesteps)}, "
        f"blocks {list(features.blocks or ())}; validation mean slice DSC {best:.4f} (the encoder's own "
        f"selection: {baseline:.4f})"
    )
    folder = save_encoder_weights(state, out_dir, chosen, prep, card={"notes": notes})
    atomic_write_json(
        folder / SELECTION_NAME,
        {
            "config": config.to_dict(),
            "chosen": features.to_dict(),
            "score": best,
            "baseline": baseline,
            "trials": trials,
        },
    )
    return folder
