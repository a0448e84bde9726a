"""Several segmenters trained on the same labeled slices, predicting as one: the mean of their probabilities.

A deep ensemble (Lakshminarayanan et al., NeurIPS 2017); nnU-Net predicts with the average of its five
cross-validation models' softmax outputs (Isensee et al., Nature Methods 2021). Measured here on held-out z blocks
of a non-contrast scan (4 labeled slices, 3 members): ``benchmarks/results/ensemble.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from smp_diffusion_encoder.errors import ConfigError


class ModelEnsemble(nn.Module):
    """``members`` (each ``(B, C, S, S)`` -> ``(B, K, S, S)`` logits) -> ``log(mean_m softmax(member_m(x)))``.

    The output is a log-probability: its softmax is exactly the members' mean probability, so every consumer of
    logits (``predict``'s softmax, argmax, entropy) sees the ensemble's probabilities.

    Raises:
        ConfigError: fewer than two members.

    Example:
        >>> members = [nn.Conv2d(1, 3, 1) for _ in range(2)]
        >>> ensemble = ModelEnsemble(members)
        >>> x = torch.randn(2, 1, 4, 4)
        >>> mean = torch.stack([m(x).softmax(1) for m in members]).mean(0)
        >>> torch.allclose(ensemble(x).softmax(1), mean, atol=1e-6)
        True
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ConfigError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.stack([m(x).float().softmax(1) for m in self.members]).mean(0)
        return mean.clamp_min(torch.finfo(mean.dtype).tiny).log()
