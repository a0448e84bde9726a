"""``--resume`` continues exactly: SIGKILL a real pretraining run, resume it, compare with an uninterrupted run.

On the CPU with one thread, fixed data order and position-seeded noise, training is deterministic, so the
resumed run must be **bitwise** equal to the uninterrupted one: model, EMA, optimizer moments and the logged
losses. Checkpoints are written every 2 steps, so the kill often lands during a write, which must never
leave an unreadable checkpoint.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import time
from pathlib import Path

import torch

from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.training.checkpoint import load_checkpoint
from tests.training.helpers import REPO, cli_env, pretrain_cmd, run_cli

ARGS = (
    "--preset",
    "tiny",
    "--steps",
    "24",
    "--batch-size",
    "2",
    "--lr",
    "1e-3",
    "--ckpt-every",
    "2",
    "--log-every",
    "3",
    "--ema-decay",
    "0.9",
    "--workers",
    "0",
    "--precision",
    "fp32",
    "--no-progress",
)


def _assert_same_tree(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_tree(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _losses(run: Path) -> list[tuple[str, str]]:
    return [(r["step"], r["loss"]) for r in csv.DictReader((run / "metrics.csv").open())]


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, store) -> None:
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        pretrain_cmd(store, "--out", killed, *ARGS),
        env=cli_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ckpt = killed / "checkpoint.pt"
    deadline = time.monotonic() + 90
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # let it run on: the kill lands mid-step or mid-write
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    at_kill = load_checkpoint(ckpt)["step"]  # the file is always complete
    assert 2 <= at_kill < 24
    print(f"killed after the step-{at_kill} checkpoint")

    resumed = run_cli(store, "--out", killed, "--resume", "--no-progress")  # settings come from config.json
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert main(["pretrain", str(store), "--out", str(tmp_path / "straight"), *ARGS]) == 0  # in-process, 1 thread

    a, b = load_checkpoint(ckpt), load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    assert a["step"] == b["step"] == 24
    for key in ("model", "ema", "optimizer", "rng"):
        _assert_same_tree(a[key], b[key], key)
    assert (
        a["extra"]["data"]
        == b["extra"]["data"]
        == {"samples_seen": 48, "epoch": 1, "index": 8, "n": 40, "seed": 0, "global_batch_size": 2}
    )
    assert _losses(killed) == _losses(tmp_path / "straight")
    assert not list(killed.glob(".*.tmp-*"))  # a temp file of the killed writer is cleaned up


def test_resume_refuses_other_settings(tmp_path, store, capsys) -> None:
    run = str(tmp_path / "run")
    common = [str(store), "--out", run, "--workers", "0", "--no-progress"]
    assert main(["pretrain", *common, "--preset", "tiny", "--steps", "2", "--batch-size", "2"]) == 0
    assert main(["pretrain", *common, "--preset", "tiny", "--steps", "4"]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert main(["pretrain", *common, "--resume", "--lr", "0.5", "--steps", "4"]) == 2
    assert "lr: saved 0.0001, now 0.5" in capsys.readouterr().err
    assert main(["pretrain", *common, "--resume", "--preset", "small", "--steps", "4"]) == 2
    assert "slices are 64 px but the U-Net is trained at 128 px" in capsys.readouterr().err
    assert main(["pretrain", *common, "--resume", "--steps", "3"]) == 0
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 3
