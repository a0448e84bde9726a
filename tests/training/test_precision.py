"""The precision is chosen by measuring the real step on this machine, without disturbing the run."""

from __future__ import annotations

import torch
from torch import nn

from smp_diffusion_encoder.training import precision as precision_mod
from smp_diffusion_encoder.training.precision import choose_precision


def _step(model: nn.Module, batch: torch.Tensor):
    out = model(batch)
    return (out.float() ** 2).mean(), {}


def test_choice_follows_the_measured_speed_and_leaves_weights_and_rng_alone(monkeypatch) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = torch.randn(4, 64)
    rng = torch.get_rng_state()
    monkeypatch.setattr(precision_mod, "cpu_supports_bf16", lambda: True)
    durations = {True: 1.0, False: 2.0}  # bf16 twice as fast

    # Make each timed run last `durations[bf16]`: the step reads autocast state, the clock advances by it.
    real_step = _step

    def timed_step(model, batch):
        bf16 = torch.is_autocast_enabled("cpu")
        nonlocal_clock.append(durations[bf16])
        return real_step(model, batch)

    nonlocal_clock: list[float] = []
    t = [0.0]

    def perf_counter():
        if nonlocal_clock:
            t[0] += nonlocal_clock.pop()
        return t[0]

    monkeypatch.setattr(precision_mod.time, "perf_counter", perf_counter)
    choice = choose_precision(model, timed_step, batch, torch.device("cpu"))
    assert choice.precision == "bf16" and choice.seconds == {"fp32": 2.0, "bf16": 1.0}
    assert "2.00x" in choice.note
    durations[True] = 2.0 / 1.02  # only 2% faster: below the threshold, fp32 stays
    assert choose_precision(model, timed_step, batch, torch.device("cpu")).precision == "fp32"
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_cpu_without_native_bf16_is_not_measured(monkeypatch) -> None:
    monkeypatch.setattr(precision_mod, "cpu_supports_bf16", lambda: False)
    choice = choose_precision(nn.Linear(2, 1), _step, torch.randn(2, 2), torch.device("cpu"))
    assert choice.precision == "fp32" and choice.seconds == {} and "no native bf16" in choice.note
