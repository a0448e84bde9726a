"""Exponential moving average of a model's weights (the weights one samples with and exports)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """Keeps ``shadow = decay_n * shadow + (1 - decay_n) * param`` after each optimizer step.

    ``decay_n = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the usual warm-up, as in TensorFlow's
    ``ExponentialMovingAverage``): early on the average follows the weights, later it is ADM's plain
    ``decay`` (0.9999 by default). Buffers are copied, not averaged. The shadow is an fp32 copy of the model
    kept on the model's device; :attr:`module` is a full ``nn.Module`` ready for sampling or export.

    Example:
        >>> net = nn.Linear(2, 2); ema = EMA(net, decay=0.99)
        >>> ema.update(net); ema.num_updates
        1
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        shadow = [p for p in self.module.parameters()]
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(shadow, params, 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        self.module.load_state_dict(state["module"])
