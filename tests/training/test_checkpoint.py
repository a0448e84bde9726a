"""Checkpoints: everything round-trips (RNG streams continue identically), bad files are refused clearly."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from smp_diffusion_encoder.errors import CorruptFileError, InputFileError
from smp_diffusion_encoder.training.checkpoint import load_checkpoint, restore_checkpoint, save_checkpoint, unwrap
from smp_diffusion_encoder.training.ema import EMA


def _draws() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_round_trip_restores_every_state_and_rng(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    ema = EMA(model, 0.9)
    for _ in range(2):
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
        sched.step()
        ema.update(model)
    np.random.normal()  # leaves a cached Gaussian in NumPy's legacy state
    path = save_checkpoint(
        tmp_path / "c.pt",
        model=model,
        optimizer=opt,
        step=2,
        ema=ema,
        scheduler=sched,
        extra={"data": {"samples_seen": 8}},
        history=[{"step": 2, "loss": 1.5}],
    )
    expected = _draws()

    model2 = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    ema2 = EMA(model2, 0.5)
    state = load_checkpoint(path)
    assert restore_checkpoint(state, model=model2, optimizer=opt2, ema=ema2, scheduler=sched2) == 2
    got = _draws()
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert ema2.decay == 0.9 and ema2.num_updates == 2
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 0.025
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert state["extra"]["data"]["samples_seen"] == 8 and state["history"] == [{"step": 2, "loss": 1.5}]


def test_rng_streams_continue_exactly(tmp_path) -> None:
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = save_checkpoint(tmp_path / "c.pt", model=model, optimizer=opt, step=0)
    a = _draws()
    restore_checkpoint(load_checkpoint(path), model=model, optimizer=opt)
    b = _draws()
    assert a[:2] == b[:2] and torch.equal(a[2], b[2])


def test_unwrap_and_bad_files(tmp_path) -> None:
    inner = nn.Linear(2, 2)
    assert unwrap(nn.parallel.DataParallel(inner)) is inner and unwrap(inner) is inner
    with pytest.raises(InputFileError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CorruptFileError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(InputFileError, match="is not a smp_diffusion_encoder.checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
