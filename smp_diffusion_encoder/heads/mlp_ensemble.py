"""Baranchuk et al.'s pixel classifier: an ensemble of MLPs with majority vote and an uncertainty map.

Each member is ``Linear(D, 128) -> ReLU -> BatchNorm1d(128) -> Linear(128, 32) -> ReLU -> BatchNorm1d(32)
-> Linear(32, C)`` (the layer order of their public ``pixel_classifier``), applied to per-pixel feature
vectors ``(N, D)``. Prediction: each member's argmax, then the per-pixel **majority vote** (ties go to the
smallest class id, so the result is deterministic).

Uncertainty (``(N,)``, nats, 0 = certain):

* ``"vote"`` (default): entropy of the vote distribution, ``-sum_c v_c log v_c`` with ``v_c`` the fraction
  of members voting ``c``; 0 when all members agree, at most ``log(min(K, C))``. This is "ensemble
  disagreement", what the majority vote itself is blind to.
* ``"mean"``: entropy of the members' mean softmax (total predictive uncertainty: also high where all
  members agree on a flat distribution).

Full-image prediction (:meth:`MLPEnsemble.predict_map`) never builds the ``(B, D, H, W)`` stack: the
feature maps stay at native resolution and are upsampled one band of rows at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.heads._bilinear import upsample_rows

Uncertainty = Literal["vote", "mean"]


@dataclass(frozen=True)
class EnsemblePrediction:
    """Majority vote of an ensemble.

    Attributes:
        labels: class ids, ``(N,)`` for pixel vectors or ``(B, H, W)`` for maps (int64).
        uncertainty: same shape, float32 nats (see module docstring).
        probabilities: members' mean softmax, ``(N, C)`` or ``(B, C, H, W)`` float32.
        votes: fraction of members voting for each class, same layout as ``probabilities``.
    """

    labels: torch.Tensor
    uncertainty: torch.Tensor
    probabilities: torch.Tensor
    votes: torch.Tensor


def pixel_mlp(in_features: int, num_classes: int, hidden: Sequence[int] = (128, 32)) -> nn.Sequential:
    """One member: ``(N, D) -> (N, C)``; ``Linear -> ReLU -> BatchNorm1d`` per hidden layer, then ``Linear``."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.BatchNorm1d(h)]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class MLPEnsemble(nn.Module):
    """``K`` independent pixel MLPs ``D -> 128 -> 32 -> C``.

    Members are plain modules in ``self.members`` so a training loop can train each one on its own
    batches (as Baranchuk et al. do) or all at once through :meth:`forward`.

    Example:
        >>> ens = MLPEnsemble(in_features=40, num_classes=3, num_models=4).eval()
        >>> out = ens.vote(torch.randn(100, 40))
        >>> out.labels.shape, out.uncertainty.shape, out.probabilities.shape
        (torch.Size([100]), torch.Size([100]), torch.Size([100, 3]))
    """

    def __init__(
        self, in_features: int, num_classes: int, num_models: int = 10, hidden: Sequence[int] = (128, 32)
    ) -> None:
        super().__init__()
        if in_features < 1 or num_classes < 2 or num_models < 1:
            raise ConfigError(
                f"need in_features >= 1, num_classes >= 2, num_models >= 1; got {in_features}, {num_classes}, {num_models}"
            )
        self.in_features, self.num_classes = int(in_features), int(num_classes)
        self.hidden = tuple(int(h) for h in hidden)
        self.members = nn.ModuleList(pixel_mlp(in_features, num_classes, self.hidden) for _ in range(num_models))

    @property
    def num_models(self) -> int:
        return len(self.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, D)`` pixel features -> logits ``(K, N, C)`` of every member."""
        x = x.to(self.members[0][0].weight.dtype)
        return torch.stack([m(x) for m in self.members])

    @torch.no_grad()
    def vote(self, x: torch.Tensor, uncertainty: Uncertainty = "vote") -> EnsemblePrediction:
        """Majority vote for pixel features ``(N, D)``; use in eval mode (BatchNorm running statistics)."""
        logits = self(x)  # (K, N, C)
        probs = logits.float().softmax(dim=-1)
        counts = torch.zeros_like(probs[0]).scatter_add_(1, logits.argmax(-1).T, torch.ones_like(probs[..., 0].T))
        labels = counts.argmax(dim=1)  # first maximum: ties go to the smallest class id
        mean, votes = probs.mean(dim=0), counts / self.num_models
        if uncertainty == "vote":
            dist = votes
        elif uncertainty == "mean":
            dist = mean
        else:
            raise ConfigError(f"uncertainty must be 'vote' or 'mean', got {uncertainty!r}")
        return EnsemblePrediction(labels, _entropy(dist, dim=1), mean, votes)

    @torch.no_grad()
    def predict_map(
        self,
        features: Sequence[torch.Tensor],
        out_size: tuple[int, int] | Sequence[int],
        chunk: int = 65536,
        uncertainty: Uncertainty = "vote",
    ) -> EnsemblePrediction:
        """Vote on every pixel of images whose features are ``[(B, C_s, h_s, w_s)]`` (native resolution).

        Features are bilinearly upsampled (``align_corners=False``) to ``out_size = (H, W)`` in bands of
        about ``chunk`` pixels (at least one row), so peak extra memory is ``~chunk * D`` floats instead
        of ``B * D * H * W``. Returns labels/uncertainty ``(B, H, W)`` and probabilities ``(B, C, H, W)``.
        """
        d = sum(f.shape[1] for f in features)
        if d != self.in_features:
            raise ConfigError(f"feature maps have {d} channels in total; the ensemble expects {self.in_features}")
        h, w = int(out_size[0]), int(out_size[1])
        b = features[0].shape[0]
        rows_per_band = max(1, int(chunk) // w)
        dev = features[0].device
        labels = torch.empty(b, h, w, dtype=torch.long, device=dev)
        unc = torch.empty(b, h, w, device=dev)
        probs = torch.empty(b, self.num_classes, h, w, device=dev)
        votes = torch.empty(b, self.num_classes, h, w, device=dev)
        for i in range(b):
            maps = [f[i : i + 1] for f in features]
            for r0 in range(0, h, rows_per_band):
                rows = slice(r0, min(h, r0 + rows_per_band))
                band = torch.cat([upsample_rows(f.float(), (h, w), rows) for f in maps], dim=1)  # (1, D, r, W)
                vec = band[0].flatten(1).T  # (r * W, D)
                pred = self.vote(vec, uncertainty)
                n = rows.stop - rows.start
                labels[i, rows] = pred.labels.view(n, w)
                unc[i, rows] = pred.uncertainty.view(n, w)
                probs[i, :, rows] = pred.probabilities.T.reshape(-1, n, w)
                votes[i, :, rows] = pred.votes.T.reshape(-1, n, w)
        return EnsemblePrediction(labels, unc, probs, votes)


class EnsembleHead(nn.Module):
    """An :class:`MLPEnsemble` as a segmentation head: maps ``[(B, C_s, H/s, W/s)]`` -> ``(B, K, H, W)``.

    Same call signature as :class:`~smp_diffusion_encoder.heads.LinearProbe`, so a
    :class:`~smp_diffusion_encoder.inference.ProbeModel` can hold either. The output is the **log of the
    vote fractions** (clamped at ``1e-6``): its softmax gives back the vote distribution, so anything that
    takes ``softmax`` then ``argmax`` of a model's logits (volume inference) gets the majority vote (ties
    to the smallest id), and the softmax entropy it reports is the ensemble-disagreement uncertainty.

    Example:
        >>> head = EnsembleHead(channels=(8, 16), strides=(1, 2), num_classes=3, num_models=2).eval()
        >>> head([torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)], (8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """

    def __init__(
        self,
        channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        num_models: int = 10,
        hidden: Sequence[int] = (128, 32),
    ) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.strides = tuple(int(s) for s in strides)
        if not self.channels or len(self.channels) != len(self.strides):
            raise ConfigError(f"need one stride per map: channels {self.channels}, strides {self.strides}")
        self.num_classes = int(num_classes)
        self.ensemble = MLPEnsemble(sum(self.channels), num_classes, num_models, hidden)

    def forward(self, features: Sequence[torch.Tensor], out_size: tuple[int, int] | Sequence[int]) -> torch.Tensor:
        votes = self.ensemble.predict_map(features, out_size).votes
        return votes.clamp_min(1e-6).log()


def _entropy(p: torch.Tensor, dim: int) -> torch.Tensor:
    """Shannon entropy in nats along ``dim`` (``0 log 0 = 0``)."""
    return -(p * p.clamp_min(1e-12).log()).sum(dim=dim)
