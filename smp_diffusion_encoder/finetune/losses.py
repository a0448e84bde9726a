"""Segmentation loss for few-shot fine-tuning: cross-entropy + multi-class soft Dice.

``loss = CE(logits, labels) + dice_weight * (1 - soft_dice)``.

Soft Dice (Milletari et al. 2016, multi-class form): with ``p = softmax(logits)`` and one-hot targets
``g``, for each class ``k`` summed over the whole batch (all pixels of all slices together, so a class
that is tiny in one slice does not get an unstable per-slice score):

    dice_k = (2 * sum(p_k * g_k) + eps) / (sum(p_k) + sum(g_k) + eps)

``soft_dice`` is the mean of ``dice_k`` over the classes **present in the batch's labels** (background
included when present). Classes absent from the labels are left out: with a few labeled slices most of
the 13 organs are missing from any given batch, and their ``dice_k`` would only push the probabilities of
absent classes to zero, which cross-entropy already does.

Example:
    >>> logits = torch.zeros(2, 3, 8, 8, requires_grad=True)
    >>> loss, parts = ce_dice_loss(logits, torch.zeros(2, 8, 8, dtype=torch.long))
    >>> sorted(parts)
    ['ce', 'dice']
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from smp_diffusion_encoder.errors import ConfigError


def soft_dice_present(logits: torch.Tensor, labels: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean soft Dice over the classes present in ``labels``.

    Args:
        logits: ``(B, K, H, W)`` float logits.
        labels: ``(B, H, W)`` integer class ids in ``[0, K)``.
        eps: smoothing in numerator and denominator.

    Returns:
        0-d tensor in ``[0, 1]`` (differentiable with respect to ``logits``).
    """
    if logits.ndim != 4 or labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ConfigError(
            f"soft Dice needs logits (B, K, H, W) and labels (B, H, W); got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    k = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    onehot = F.one_hot(labels.long(), k).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + eps) / (denominator + eps)
    present = onehot.sum(dims) > 0
    return dice[present].mean()


def ce_dice_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, dice_weight: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``CE + dice_weight * (1 - soft Dice over present classes)``; returns ``(loss, {"ce", "dice"})``.

    ``logits`` ``(B, K, H, W)``, ``labels`` ``(B, H, W)`` long; ``"dice"`` is the soft Dice (higher is better),
    detached, for logging.
    """
    labels = labels.long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise ConfigError(f"labels must lie in [0, {logits.shape[1]}); got {int(labels.min())}..{int(labels.max())}")
    ce = F.cross_entropy(logits.float(), labels)
    dice = soft_dice_present(logits, labels)
    return ce + dice_weight * (1.0 - dice), {"ce": ce.detach(), "dice": dice.detach()}
