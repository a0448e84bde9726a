"""torchrun entry point for test_ddp.py: a tiny pretraining; each rank saves its final weights.

Usage: ``torchrun --standalone --nproc_per_node=2 ddp_worker.py STORE RUN_DIR OUT_DIR``
"""

import sys

import torch

from smp_diffusion_encoder.models import get_preset
from smp_diffusion_encoder.training.config import PretrainConfig
from smp_diffusion_encoder.training.distributed import init_distributed, shutdown
from smp_diffusion_encoder.training.pretrain import run_pretraining


def config(steps: int = 6) -> PretrainConfig:
    return PretrainConfig(
        unet=get_preset("tiny").replace(learn_sigma=True),
        batch_size=4,
        lr=1e-3,
        seed=0,
        steps=steps,
        ema_decay=0.9,
        log_every=3,
        ckpt_every=3,
        workers=0,
        precision="fp32",
    )


if __name__ == "__main__":
    store, run_dir, out = sys.argv[1:4]
    info = init_distributed("cpu")
    trainer = run_pretraining(store, run_dir, config(), dist_info=info, progress=False)
    torch.save(trainer.bare.state_dict(), f"{out}/rank{info.rank}.pt")
    shutdown()
