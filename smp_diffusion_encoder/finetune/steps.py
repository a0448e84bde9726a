"""Fine-tuning steps for the shared :class:`~smp_diffusion_encoder.training.Trainer` (swap the step, not the loop).

Both steps follow the :class:`~smp_diffusion_encoder.training.loop.Step` protocol
``step(model, batch) -> (loss, metrics)`` and use :func:`~smp_diffusion_encoder.finetune.losses.ce_dice_loss`
on full-resolution logits. A batch is a dict (built by :mod:`smp_diffusion_encoder.finetune.api`):

* ``"labels"``: ``(B, H, W)`` int64 class ids (first key: the loop reads the batch size from it);
* ``"step"``: the optimizer step this batch is for (an ``int``; it makes step behaviour a function of the
  step count alone, so a resumed run behaves exactly like an uninterrupted one);
* ``"features"``: the frozen encoder's maps ``[(B, C_s, H/s, W/s)]`` (fp16 from a
  :class:`~smp_diffusion_encoder.heads.FeatureCache`), when they can be reused;
* ``"image"``: ``(B, 1, H, W)`` slices in [-1, 1], when features must be computed (augmentation, or a
  trainable encoder).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.finetune.losses import ce_dice_loss
from smp_diffusion_encoder.training.checkpoint import unwrap


class ProbeStep:
    """Linear probe on cached frozen features: ``model`` is a :class:`~smp_diffusion_encoder.heads.LinearProbe`.

    Needs ``batch["features"]``; logits ``(B, K, H, W)`` at the labels' resolution.

    Example:
        >>> from smp_diffusion_encoder.heads import LinearProbe
        >>> probe = LinearProbe((8,), (1,), num_classes=3)
        >>> batch = {"labels": torch.zeros(2, 16, 16, dtype=torch.long), "step": 0,
        ...          "features": [torch.randn(2, 8, 16, 16, dtype=torch.float16)]}
        >>> loss, metrics = ProbeStep()(probe, batch)
        >>> loss.shape, sorted(metrics)
        (torch.Size([]), ['ce', 'dice'])
    """

    def __init__(self, dice_weight: float = 1.0) -> None:
        self.dice_weight = dice_weight

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if "features" not in batch:
            raise ConfigError("ProbeStep needs cached features in the batch (key 'features')")
        labels = batch["labels"]
        logits = model(batch["features"], labels.shape[-2:])
        return ce_dice_loss(logits, labels, dice_weight=self.dice_weight)


class MLPStep:
    """Baranchuk's pixel-MLP ensemble: ``model`` is an :class:`~smp_diffusion_encoder.heads.EnsembleHead`.

    Needs ``batch["pixels"]`` ``(K, N, D)`` (each member's own random pixel feature vectors, as each of
    Baranchuk's MLPs trains on its own shuffled pixels) and ``batch["labels"]`` ``(K, N)``. The loss is
    the members' mean cross-entropy (per-pixel training has no image to take a Dice over).
    """

    calls_submodules = True  # see training.loop.Step: gradients are averaged by the Trainer

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if "pixels" not in batch:
            raise ConfigError("MLPStep needs pixel feature vectors in the batch (key 'pixels')")
        members = unwrap(model).ensemble.members
        pixels, labels = batch["pixels"], batch["labels"]
        if pixels.shape[0] != len(members):
            raise ConfigError(f"batch has pixels for {pixels.shape[0]} members; the ensemble has {len(members)}")
        losses = torch.stack([F.cross_entropy(m(x.float()), y) for m, x, y in zip(members, pixels, labels)])
        loss = losses.mean()
        return loss, {"ce": loss.detach()}


class DecoderStep:
    """smp model (``encoder``, ``decoder``, ``segmentation_head``) whose encoder is frozen, then optionally tuned.

    Args:
        unfreeze_at: optimizer step from which the encoder trains too (``None``: frozen throughout). The
            encoder's parameters sit in the optimizer from the start, in their own param group with
            ``lr * encoder_lr_scale`` (see :func:`decoder_param_groups`); while frozen they have
            ``requires_grad=False``, hence no gradient, and the optimizer skips them (no update, no
            weight decay, no moment state). Whether they train is decided from ``batch["step"]`` at every
            call, so resuming before or after ``unfreeze_at`` continues exactly.
        dice_weight: weight of the Dice term.

    While frozen the encoder runs in eval mode under ``no_grad`` (or its cached ``batch["features"]`` are
    used); once trainable it runs in train mode with gradients and needs ``batch["image"]``.
    """

    calls_submodules = True  # see training.loop.Step: gradients are averaged by the Trainer

    def __init__(self, unfreeze_at: int | None = None, dice_weight: float = 1.0) -> None:
        if unfreeze_at is not None and unfreeze_at < 0:
            raise ConfigError(f"unfreeze_at must be >= 0 or None, got {unfreeze_at}")
        self.unfreeze_at, self.dice_weight = unfreeze_at, dice_weight

    def encoder_trainable(self, step: int) -> bool:
        """Whether the encoder trains at optimizer step ``step``."""
        return self.unfreeze_at is not None and step >= self.unfreeze_at

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        bare = unwrap(model)
        trainable = self.encoder_trainable(int(batch["step"]))
        bare.encoder.requires_grad_(trainable)
        bare.encoder.train(trainable)
        if not trainable and "features" in batch:
            features = [f.float().contiguous(memory_format=torch.channels_last) for f in batch["features"]]
        elif "image" not in batch:
            raise ConfigError("DecoderStep needs batch['image'] when features are not cached or the encoder trains")
        elif trainable:
            features = bare.encoder(batch["image"])
        else:
            with torch.no_grad():
                features = bare.encoder(batch["image"])
        logits = bare.segmentation_head(bare.decoder(features))
        loss, metrics = ce_dice_loss(logits, batch["labels"], dice_weight=self.dice_weight)
        return loss, {**metrics, "encoder_trainable": torch.tensor(float(trainable))}


def decoder_param_groups(model: nn.Module, lr: float, encoder_lr_scale: float) -> list[dict[str, Any]]:
    """Optimizer param groups for :class:`DecoderStep`: decoder + head at ``lr``, encoder at ``lr * scale``.

    The encoder group is always present (even when it never unfreezes), so optimizer state dicts have the
    same layout whatever the run's phase and a checkpoint restores into a freshly built optimizer.
    """
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    head = [p for p in model.parameters() if id(p) not in encoder_ids]
    return [
        {"params": head, "lr": lr, "name": "decoder"},
        {"params": list(model.encoder.parameters()), "lr": lr * encoder_lr_scale, "name": "encoder"},
    ]
