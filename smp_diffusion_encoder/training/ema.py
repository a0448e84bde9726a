"""Exponential moving average of a model's weights (the weights one samples with and exports).

The update is timm's :class:`~timm.utils.model_ema.ModelEmaV3` (parameters interpolated in place with
``torch._foreach_lerp_``, buffers copied: ``exclude_buffers=True``), with two things of our own that timm does not
have in this form: the decay warm-up ``decay_n = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (TensorFlow's
``ExponentialMovingAverage``; timm's ``use_warmup`` is another curve, ``1 - (1 + n / gamma) ** -power``), and the
checkpoint state ``{"decay", "num_updates", "module"}`` that runs have always written (old checkpoints resume).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.utils.model_ema import ModelEmaV3
from torch import nn


class EMA(ModelEmaV3):
    """Keeps ``shadow = decay_n * shadow + (1 - decay_n) * param`` after each optimizer step.

    Early on the average follows the weights, later it is ADM's plain ``decay`` (0.9999 by default). The shadow
    is a copy of the model kept on the model's device (fp32 for an fp32 model); :attr:`module` is a full
    ``nn.Module`` ready for sampling or export.

    Example:
        >>> net = nn.Linear(2, 2); ema = EMA(net, decay=0.99)
        >>> ema.update(net); ema.num_updates
        1
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        super().__init__(model, decay=decay, exclude_buffers=True)
        self.module.requires_grad_(False)
        self.num_updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        """One update with :meth:`current_decay` (``step`` is ignored: the warm-up counts updates)."""
        self.apply_update_no_buffers_(model, self.current_decay())
        self.num_updates += 1

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """The checkpoint entry ``{"decay", "num_updates", "module": the shadow's state dict}``."""
        return {"decay": self.decay, "num_updates": self.num_updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        return self.module.load_state_dict(state["module"], strict=strict, assign=assign)
