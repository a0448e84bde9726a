"""Data-parallel pretraining for real: 2 CPU processes under torchrun (gloo) vs one process, same global batch.

Expectations:
- the two replicas are bitwise identical after training (DDP all-reduces gradients, every rank then runs the
  same optimizer arithmetic on the same values);
- they match a single process with the same global batch (4 = 2 x 2; same samples, same noise because
  noise is seeded by stream position) up to floating-point reduction order: DDP averages two per-rank
  means where one process takes one mean over 4 samples, and convolutions run on batches of 2 instead of 4.
  Those differences are ~1e-7 relative per step; after 6 AdamW steps at lr 1e-3 we allow 2e-5 absolute
  on weights, against training updates of ~6e-3 (so the check is 300x tighter than the training signal);
- the checkpoint written by the 2-process run resumes in a single process (checkpoints are world-size free).
"""

from __future__ import annotations

import subprocess
import sys

import torch

from smp_diffusion_encoder.models import DiffusionUNet
from smp_diffusion_encoder.training.checkpoint import load_checkpoint
from smp_diffusion_encoder.training.distributed import DistInfo
from smp_diffusion_encoder.training.pretrain import run_pretraining
from tests.training.ddp_worker import config
from tests.training.helpers import REPO, cli_env

CPU = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_two_gloo_processes_match_one_process(tmp_path, store) -> None:
    out = tmp_path / "weights"
    out.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "tests/training/ddp_worker.py"),
        str(store),
        str(tmp_path / "ddp"),
        str(out),
    ]
    proc = subprocess.run(cmd, env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # replicas identical

    single = run_pretraining(store, tmp_path / "single", config(), dist_info=CPU, progress=False)
    ddp_ckpt = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    assert ddp_ckpt["extra"]["world_size"] == 2 and ddp_ckpt["step"] == 6
    assert _max_diff(ddp_ckpt["model"], rank0) == 0
    torch.manual_seed(0)
    init = DiffusionUNet(config().unet).state_dict()
    update = _max_diff(single.bare.state_dict(), init)
    diff = _max_diff(rank0, single.bare.state_dict())
    print(f"DDP vs single: max |diff| {diff:.3g}, max update {update:.3g}")
    assert update > 3e-3 and diff < 2e-5, (update, diff)
    assert _max_diff(ddp_ckpt["ema"]["module"], single.ema.state_dict()["module"]) < 2e-5
    ddp_loss = [r["loss"] for r in ddp_ckpt["history"]]
    single_loss = [r["loss"] for r in single.history]
    torch.testing.assert_close(torch.tensor(ddp_loss), torch.tensor(single_loss), rtol=1e-4, atol=0)

    # The 2-process checkpoint continues in one process exactly like the single-process run does.
    cont_ddp = run_pretraining(store, tmp_path / "ddp", config(8), dist_info=CPU, resume=True, progress=False)
    cont_single = run_pretraining(store, tmp_path / "single", config(8), dist_info=CPU, resume=True, progress=False)
    assert cont_ddp.global_step == cont_single.global_step == 8
    assert _max_diff(cont_ddp.bare.state_dict(), cont_single.bare.state_dict()) < 4e-5
