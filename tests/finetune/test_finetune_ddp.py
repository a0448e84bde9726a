"""Data-parallel fine-tuning for real: 2 CPU processes under torchrun (gloo).

Fine-tuning steps call the model's parts themselves (cached features skip the encoder), which a
``DistributedDataParallel`` wrapper would not see, so the Trainer averages their gradients itself. Checked:
both replicas end bitwise identical (same averaged gradients, same optimizer arithmetic), including the
encoder after it unfreezes; rank 0 alone wrote the run folder; the loss fell. (A single process does not
give the same numbers: the Dice term is a statistic of the whole batch, not a mean over samples.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.inference.model_dir import load_model
from smp_diffusion_encoder.training.checkpoint import load_checkpoint
from tests.training.helpers import REPO, cli_env


def test_two_gloo_processes_keep_identical_replicas(tmp_path: Path) -> None:
    root = write_phantom_dataset(tmp_path / "phantom", n_labeled=2, n_unlabeled=0, shape=(12, 64, 64))
    out = tmp_path / "weights"
    out.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "tests/finetune/ddp_finetune_worker.py"),
        str(root),
        str(tmp_path / "run"),
        str(out),
    ]
    proc = subprocess.run(cmd, env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0 if "running_" not in k and "num_batches" not in k)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["extra"]["world_size"] == 2 and ckpt["step"] == 3
    losses = [r["loss"] for r in ckpt["history"] if "loss" in r]
    assert losses[-1] < losses[0]
    assert all(torch.equal(ckpt["model"][k], rank0[k]) for k in rank0)
    assert load_model(tmp_path / "run" / "model").kind == "smp"
