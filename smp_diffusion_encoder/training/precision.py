"""Choosing the training precision on the machine at hand, by measurement.

bfloat16 autocast speeds training up where the hardware has bf16 arithmetic (GPUs; CPUs with AVX512-BF16 or
AMX-BF16) and slows it down where bf16 is emulated. Machines differ from one session to the next, so nothing
is assumed: :func:`choose_precision` times the real training step (forward + backward, no optimizer update)
in fp32 and under bf16 autocast, alternately, and keeps bf16 only if it is clearly faster. On CUDA bf16 is
taken whenever the device supports it (it is several times faster on every recent GPU).

The measurement touches neither the weights nor any random generator the run uses (gradients are cleared
and the global RNG state is forked), so a run that measures first still resumes exactly.

Example:
    >>> choice = choose_precision(model, step, batch, torch.device("cpu"))   # doctest: +SKIP
    >>> choice.precision, choice.note                                          # doctest: +SKIP
    ('bf16', 'bf16 autocast 1.26x faster than fp32 (median 1.55 s vs 1.96 s per step, 3 alternating runs)')
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from smp_diffusion_encoder._device import cpu_supports_bf16

Precision = Literal["fp32", "bf16"]
#: bf16 must be at least this much faster (time ratio) to be chosen: below it, fp32's exactness wins.
MIN_SPEEDUP = 1.05


@dataclass(frozen=True)
class PrecisionChoice:
    """The chosen precision, the measured seconds per step (``{}`` when not measured) and a readable note."""

    precision: Precision
    seconds: dict[str, float]
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "seconds_per_step": self.seconds, "note": self.note}


def choose_precision(
    model: nn.Module,
    step: Callable[[nn.Module, Any], tuple[torch.Tensor, Any]],
    batch: Any,
    device: torch.device,
    *,
    repeats: int = 3,
) -> PrecisionChoice:
    """Pick ``"bf16"`` or ``"fp32"`` for training ``model`` with ``step`` on ``batch`` (already on ``device``)."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return PrecisionChoice(
            "bf16" if ok else "fp32",
            {},
            "bf16 autocast (CUDA device supports bf16)" if ok else "fp32 (no CUDA bf16 support)",
        )
    if not cpu_supports_bf16():
        return PrecisionChoice("fp32", {}, "fp32 (this CPU has no native bf16 kernels: AVX512-BF16/AMX)")

    def run(bf16: bool) -> float:
        tick = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = step(model, batch)
        loss.backward()
        seconds = time.perf_counter() - tick
        model.zero_grad(set_to_none=True)
        return seconds

    was_training = model.training
    model.train()
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with torch.random.fork_rng(devices=[]):
        run(False), run(True)  # warm-up (oneDNN primitive creation)
        for _ in range(repeats):
            times["fp32"].append(run(False))
            times["bf16"].append(run(True))
    model.train(was_training)
    med = {k: statistics.median(v) for k, v in times.items()}
    speedup = med["fp32"] / med["bf16"]
    chosen: Precision = "bf16" if speedup >= MIN_SPEEDUP else "fp32"
    note = (
        f"{'bf16 autocast' if chosen == 'bf16' else 'fp32'} chosen: bf16 autocast is {speedup:.2f}x the speed "
        f"of fp32 (median {med['bf16']:.3g} s vs {med['fp32']:.3g} s per forward+backward, {repeats} "
        f"alternating runs; bf16 needs >= {MIN_SPEEDUP}x)"
    )
    return PrecisionChoice(chosen, {k: round(v, 4) for k, v in med.items()}, note)
