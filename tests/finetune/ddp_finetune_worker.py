"""torchrun entry point for test_finetune_ddp.py: fine-tune with unfreezing; each rank saves its final weights.

Usage: ``torchrun --standalone --nproc_per_node=2 ddp_finetune_worker.py ROOT RUN_DIR OUT_DIR``
"""

import sys

import torch

import smp_diffusion_encoder  # noqa: F401  (registers ddpm-ct-tiny)
from smp_diffusion_encoder.finetune import api
from smp_diffusion_encoder.training import Trainer
from smp_diffusion_encoder.training.distributed import shutdown

OPTIONS = dict(method="unet", encoder="ddpm-ct-tiny", budget="4", batch_size=4, steps=3, unfreeze_at=1, device="cpu")
TRAINERS: list[Trainer] = []


class RecordingTrainer(Trainer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        TRAINERS.append(self)


if __name__ == "__main__":
    root, run_dir, out = sys.argv[1:4]
    api.Trainer = RecordingTrainer  # type: ignore[misc]
    api.finetune(root, api.FinetuneConfig(**OPTIONS), out_dir=run_dir, progress=False)
    (trainer,) = TRAINERS
    torch.save(trainer.bare.state_dict(), f"{out}/rank{trainer.rank}.pt")
    shutdown()
