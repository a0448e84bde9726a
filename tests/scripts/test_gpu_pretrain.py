"""A dry run of the GPU pretraining script on the CPU (tiny U-Net, 2 steps), as the GPU machine would run it:
without the packages that machine lacks, writing under a fake $OUT within the device tool's limits."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from smp_diffusion_encoder.models.unet import DiffusionUNet
from tests.training.helpers import import_blocker

REPO = Path(__file__).resolve().parents[2]
#: Time budgets far above the ~2 min a dry run takes on an idle 2-core CPU: the CPU may be shared.
DRY_RUN = (
    "--device",
    "cpu",
    "--preset",
    "tiny",
    "--batch-sizes",
    "2",
    "--min-batch",
    "2",
    "--measure-seconds",
    "900",
    "--measure-warmup",
    "1",
    "--measure-repeats",
    "1",
    "--max-steps",
    "2",
    "--milestone-minutes",
    "0",
    "--no-compile",
    "--log-every",
    "1",
    "--ckpt-every",
    "1",
    "--report-every",
    "1",
    "--hires",
    "tiny:128",
    "--hires-batch-sizes",
    "2",
    "--hires-seconds",
    "900",
    "--hires-min-seconds",
    "5",
    "--deadline-minutes",
    "60",
)


@pytest.mark.slow
def test_dry_run_writes_a_run_and_its_figures_within_the_limits(tmp_path, store) -> None:
    blocker = import_blocker(tmp_path / "blocker")
    out = tmp_path / "OUT"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(
        OUT=str(out), PYTHON=sys.executable, PYTHONPATH=str(blocker), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1"
    )
    cmd = [
        "bash",
        str(REPO / "scripts" / "gpu_pretrain_run.sh"),
        "--store",
        str(store),
        "--work",
        str(tmp_path / "work"),
        *DRY_RUN,
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    milestones = [f for f in files if f.startswith("run/milestones/")]
    assert files == sorted(["log.txt", "run/config.json", "run/metrics.csv", "throughput.json", *milestones])
    assert milestones == ["run/milestones/step-0000000.safetensors", "run/milestones/step-0000002.safetensors"]
    sizes = [(out / f).stat().st_size for f in files]  # the device tool's limits on what comes back
    assert len(files) <= 8 and max(sizes) <= 16 * 2**20 and sum(sizes) <= 64 * 2**20
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for f in files for part in f.split("/"))
    assert all(f.count("/") <= 2 for f in files)

    report = json.loads((out / "throughput.json").read_text())
    assert report["out"]["problems"] == [] and report["out"]["files"] == len(files)
    spec = report["measure"]["specs"][0]
    assert spec["spec"] == "tiny:64" and spec["chosen_batch"] == 2 and spec["flops_per_image"] > 0
    for row in spec["batches"]:
        assert {"step_s", "images_per_s", "tflop_s", "share_of_peak", "peak_memory_gib"} <= set(row)
    assert set(spec["input_pipeline"]) >= {"device_batch_ms", "dataloader_batch_ms", "device_noise_ms", "cpu_noise_ms"}
    run = report["pretrain"]
    assert run["attempts"][0]["returncode"] == 0 and run["steps"] == 2 and run["images_seen"] == 4
    assert {"images_per_s", "step_s", "tflop_s", "share_of_peak", "peak_memory_gib"} <= set(run["steady"])
    assert [m["step"] for m in run["milestones"]] == [0, 2] and run["milestones"][1]["source"] == "checkpoint"
    hires = report["hires"]["specs"][0]
    assert hires["image_size"] == 128 and "images_per_s" in hires["batches"][0]
    assert set(report["stages"]) == {"measure_s", "pretrain_s", "hires_s", "total_s"}

    columns = next(csv.reader((out / "run" / "metrics.csv").open()))
    assert {"step", "loss", "images_per_s", "step_s", "time_s", "warmup_s"} <= set(columns)
    log = (out / "log.txt").read_text()
    assert "pretrain exit status 0" in log and "--preload on --noise-rng device" in log

    # Copied back, run/ is a run folder: its float16 milestones load, and export reads them.
    weights = load_file(out / "run" / "milestones" / "step-0000002.safetensors")
    assert {v.dtype for v in weights.values()} == {torch.float16}
    DiffusionUNet("tiny").load_state_dict(weights, strict=True)
    with safe_open(str(out / "run" / "milestones" / "step-0000002.safetensors"), "pt") as fh:
        assert fh.metadata()["weights"] == "ema" and fh.metadata()["step"] == "2"
    from smp_diffusion_encoder.formats.encoder_weights import load_encoder_weights
    from smp_diffusion_encoder.formats.export import export_encoder

    shutil.copytree(out / "run", tmp_path / "copied")
    export_encoder(tmp_path / "copied", tmp_path / "encoder", variant="ddpm-ct-tiny", milestone=2)
    state, config = load_encoder_weights(tmp_path / "encoder")
    assert config["preprocessing"]["image_size"] == 64 and all(k.startswith("unet.") for k in state)
