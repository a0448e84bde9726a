"""The GPU path of ``smp-diffusion pretrain``, run on the CPU: the store held in device memory gives the same run
as the DataLoader, noise drawn on the device resumes exactly, ``auto`` settings are recorded and kept, the
training clock's options reach the loop, and training imports none of the volume readers."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.training.checkpoint import load_checkpoint
from smp_diffusion_encoder.training.config import PretrainConfig
from smp_diffusion_encoder.training.pretrain import resolve_runtime
from tests.training.helpers import REPO, cli_env, import_blocker
from tests.training.test_resume import _assert_same_tree

COMMON = (
    "--preset",
    "tiny",
    "--batch-size",
    "2",
    "--lr",
    "1e-3",
    "--log-every",
    "1",
    "--ema-decay",
    "0.9",
    "--precision",
    "fp32",
    "--no-progress",
)


#: What the GPU machine lacks (scripts/gpu_pretrain_run.sh): training on a store must not need them.
def _run(store, out, *args: str) -> dict:
    assert main(["pretrain", str(store), "--out", str(out), *COMMON, *args]) == 0
    return load_checkpoint(out / "checkpoint.pt")


def test_store_in_device_memory_trains_exactly_like_the_dataloader(tmp_path, store) -> None:
    loader = _run(store, tmp_path / "loader", "--steps", "3", "--preload", "off", "--workers", "0")
    held = _run(store, tmp_path / "held", "--steps", "3", "--preload", "on")
    for key in ("model", "ema", "optimizer"):
        _assert_same_tree(loader[key], held[key], key)
    assert held["extra"]["runtime"]["preload"] is True and loader["extra"]["runtime"]["preload"] is False


def test_device_noise_resumes_exactly_and_auto_keeps_the_recorded_choice(tmp_path, store) -> None:
    straight = _run(store, tmp_path / "straight", "--steps", "4", "--preload", "on", "--noise-rng", "device")
    run = tmp_path / "resumed"
    _run(store, run, "--steps", "2", "--preload", "on", "--noise-rng", "device", "--ckpt-every", "2")
    resumed = _run(store, run, "--steps", "4", "--resume", "--noise-rng", "auto")  # auto: keeps "device"
    for key in ("model", "ema", "optimizer", "rng"):
        _assert_same_tree(straight[key], resumed[key], key)
    config = json.loads((run / "config.json").read_text())
    assert config["runtime"]["noise_rng"] == "device" and config["runtime"]["compile"] is False
    assert config["runtime"]["device"] == "cpu" and "flops_per_sample" not in config["runtime"]  # CUDA only
    cpu_noise = _run(store, tmp_path / "cpu", "--steps", "4", "--preload", "on")  # auto on a CPU: cpu
    assert cpu_noise["extra"]["runtime"]["noise_rng"] == "cpu"
    assert not torch.equal(cpu_noise["model"]["out.2.weight"], straight["model"]["out.2.weight"])


def test_auto_settings_resolve_per_device_and_old_checkpoints_drew_on_the_cpu() -> None:
    config = PretrainConfig(unet="tiny")
    cpu = torch.device("cpu")
    assert resolve_runtime(config, cpu, 10**6) == {"preload": False, "noise_rng": "cpu"}
    assert resolve_runtime(config, cpu, 10**6, saved={}) == {"preload": False, "noise_rng": "cpu"}  # before 0.3
    assert resolve_runtime(config, cpu, 10**6, saved={"noise_rng": "device"})["noise_rng"] == "device"
    forced = PretrainConfig(unet="tiny", preload="on", noise_rng="device")
    assert resolve_runtime(forced, cpu, 10**12, saved={"noise_rng": "cpu"}) == {"preload": True, "noise_rng": "device"}


def test_training_clock_options_stop_the_run_and_keep_milestones(tmp_path, store) -> None:
    run = tmp_path / "run"
    state = _run(store, run, "--steps", "50", "--max-minutes", "0.0001", "--milestone-minutes", "0", "0.00005")
    # step 1 is warm-up (off the clock); step 2 takes far more than the 6 ms limit
    assert state["step"] == 2 and state["extra"]["train_seconds"] >= 0.006
    assert sorted(p.name for p in (run / "milestones").iterdir()) == [
        "step-0000000.safetensors",
        "step-0000002.safetensors",
    ]
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[-4:] == ["mse", "step_s", "time_s", "warmup_s"] and len(rows) == 3


def test_training_on_a_store_imports_no_volume_reader(tmp_path, store) -> None:
    blocker = import_blocker(tmp_path / "blocker")
    env = cli_env()
    env["PYTHONPATH"] = f"{blocker}:{REPO}"
    assert subprocess.run([sys.executable, "-c", "import nibabel"], env=env, capture_output=True).returncode == 1
    cmd = [
        sys.executable,
        "-m",
        "smp_diffusion_encoder.cli.main",
        "pretrain",
        str(store),
        "--out",
        str(tmp_path / "run"),
        *COMMON,
        "--steps",
        "1",
        "--preload",
        "on",
        "--noise-rng",
        "device",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
