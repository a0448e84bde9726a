"""The generic loop with a non-diffusion step: it trains, logs, plots, validates and stops early."""

from __future__ import annotations

import csv
from itertools import count

import pytest
import torch
from torch import nn

from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.training.loop import EarlyStopping, TrainConfig, Trainer


class RegressionStep:
    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        err = model(x) - y
        return (err**2).mean(), {"mae": err.abs().mean().detach()}


def _data(start_step: int):
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([[2.0], [-1.0]])
    for _ in count(start_step):
        x = torch.randn(8, 2, generator=g)
        yield x, x @ w


def test_trains_and_writes_csv_and_curve(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    sched_opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(sched_opt, lambda s: 0.5 if s >= 20 else 1.0)
    cfg = TrainConfig(max_steps=40, out_dir=str(tmp_path), log_every=10, ckpt_every=20, ema_decay=0.5, progress=False)
    trainer = Trainer(model, sched_opt, RegressionStep(), cfg, scheduler=sched)
    history = trainer.fit(_data)
    assert [r["step"] for r in history] == [10, 20, 30, 40] and history[-1]["loss"] < history[0]["loss"] / 10
    assert history[1]["lr"] == 0.1 and history[2]["lr"] == 0.05
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert list(rows[0])[:4] == ["step", "loss", "lr", "images_per_s"] and "mae" in rows[0] and len(rows) == 4
    assert float(rows[0]["images_per_s"]) > 0
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "checkpoint.pt").is_file()
    assert trainer.ema is not None and trainer.ema.num_updates == 40
    assert not list(tmp_path.glob(".*tmp*"))


def test_validation_hook_and_early_stopping(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9])
    seen = []

    def validate(bare, ema, step):
        seen.append((step, ema is None, bare.training))
        return {"val_score": next(scores)}

    cfg = TrainConfig(
        max_steps=100, out_dir=str(tmp_path), log_every=5, val_every=5, ckpt_every=0, ema_decay=None, progress=False
    )
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.01),
        RegressionStep(),
        cfg,
        validate=validate,
        early_stopping=EarlyStopping("val_score", mode="max", patience=2),
    )
    history = trainer.fit(_data)
    assert trainer.global_step == 20 and [s for s, *_ in seen] == [5, 10, 15, 20]
    assert [r["val_score"] for r in history] == [0.5, 0.7, 0.6, 0.65]
    resumed = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.01),
        RegressionStep(),
        cfg,
        early_stopping=EarlyStopping("val_score", mode="max", patience=2),
    )
    resumed.resume()
    assert resumed.global_step == 20 and resumed.early_stopping.state_dict() == {"best": 0.7, "best_step": 10, "bad": 2}


def test_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError):
        TrainConfig(max_steps=0, out_dir=str(tmp_path))
    with pytest.raises(ConfigError):
        TrainConfig(max_steps=1, out_dir=str(tmp_path), precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="milestones"):
        TrainConfig(max_steps=1, out_dir=str(tmp_path), milestones=(-1,))


class AutocastProbe(RegressionStep):
    """Records whether the step ran under CPU bf16 autocast."""

    seen: list[bool] = []

    def __call__(self, model, batch):
        self.seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return super().__call__(model, batch)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bf16_autocast_runs_on_the_cpu_too(tmp_path, precision) -> None:
    model, step = nn.Linear(2, 1), AutocastProbe()
    step.seen = []
    Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        step,
        TrainConfig(max_steps=2, out_dir=str(tmp_path), precision=precision, progress=False),
    ).fit(_data)
    assert step.seen == [precision == "bf16"] * 2


def test_milestones_keep_the_exported_weights_of_those_steps(tmp_path) -> None:
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    cfg = TrainConfig(
        max_steps=6,
        out_dir=str(tmp_path),
        log_every=1,
        ckpt_every=3,
        ema_decay=0.5,
        milestones=(4, 0, 2, 9),
        progress=False,
    )
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), RegressionStep(), cfg)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    snapshots = {}
    original = trainer.save_milestone

    def spy():
        path = original()
        if path is not None:
            snapshots[trainer.global_step] = {k: v.clone() for k, v in trainer.ema.module.state_dict().items()}
        return path

    trainer.save_milestone = spy  # type: ignore[method-assign]
    trainer.fit(_data)
    files = sorted(p.name for p in (tmp_path / "milestones").iterdir())
    assert files == ["step-0000000.safetensors", "step-0000002.safetensors", "step-0000004.safetensors"]
    for step, name in zip((0, 2, 4), files):
        saved = load_file(tmp_path / "milestones" / name)
        assert saved.keys() == first.keys()
        for k in saved:  # the EMA weights of that step (step 0: the initialization)
            torch.testing.assert_close(saved[k], first[k] if step == 0 else snapshots[step][k], rtol=0, atol=0)
    assert not torch.equal(load_file(tmp_path / "milestones" / files[1])["weight"], first["weight"])


class Clock:
    """A fake ``time.perf_counter``: each training step takes 10 s."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TenSecondStep(RegressionStep):
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def __call__(self, model, batch):
        self.clock.now += 10.0
        return super().__call__(model, batch)


def test_training_clock_limits_the_run_and_places_milestones(tmp_path, monkeypatch) -> None:
    from safetensors import safe_open

    from smp_diffusion_encoder.training import loop

    clock = Clock()
    monkeypatch.setattr(loop.time, "perf_counter", clock)
    torch.manual_seed(0)
    model = nn.Linear(2, 1)

    def trainer(limit: float, points: tuple[float, ...]) -> Trainer:
        cfg = TrainConfig(
            max_steps=100,
            out_dir=str(tmp_path),
            log_every=2,
            ckpt_every=0,
            ema_decay=0.5,
            progress=False,
            time_limit_s=limit,
            milestone_seconds=points,
            flops_per_sample=1e12,
        )
        return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), TenSecondStep(clock), cfg)

    first = trainer(35.0, (25.0, 0.0, 15.0))
    history = first.fit(_data)
    # the first step (10 s) is warm-up, off the clock; then 10 s per step: step k is at 10 (k - 1) s
    assert first.global_step == 5 and first.train_seconds == 40.0
    assert [r["step"] for r in history] == [2, 4, 5]  # the step the limit falls on is logged too
    assert history[0]["warmup_s"] == 10.0 and "warmup_s" not in history[1]
    assert [r["time_s"] for r in history] == [10.0, 30.0, 40.0] and history[1]["step_s"] == 10.0
    assert history[1]["tflop_s"] == pytest.approx(1e12 * history[1]["images_per_s"] / 1e12)
    kept = {p.name: p for p in (tmp_path / "milestones").iterdir()}
    assert sorted(kept) == ["step-0000000.safetensors", "step-0000003.safetensors", "step-0000004.safetensors"]
    with safe_open(str(kept["step-0000003.safetensors"]), "pt") as fh:
        assert fh.metadata()["train_seconds"] == "20.000"

    resumed = trainer(65.0, (25.0, 0.0, 15.0, 55.0))
    resumed.resume()
    assert resumed.train_seconds == 40.0
    resumed.fit(_data)  # step 6 is this session's warm-up (clock stays 40), then 50, 60, 70 >= 65
    assert resumed.global_step == 9 and resumed.train_seconds == 70.0
    assert "step-0000008.safetensors" in {p.name for p in (tmp_path / "milestones").iterdir()}
    assert len(list((tmp_path / "milestones").iterdir())) == 4
    with pytest.raises(ConfigError, match="time_limit_s"):
        TrainConfig(max_steps=1, out_dir=str(tmp_path), time_limit_s=0)
    with pytest.raises(ConfigError, match="milestone_seconds"):
        TrainConfig(max_steps=1, out_dir=str(tmp_path), milestone_seconds=(-1.0,))
