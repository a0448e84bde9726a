"""Training: one loop (:class:`Trainer`) with swappable steps, lossless atomic checkpoints, DDPM pretraining.

- :mod:`.loop`: :class:`Trainer`, :class:`TrainConfig`, :class:`EarlyStopping` (shared with few-shot heads).
- :mod:`.checkpoint`: complete, atomically written checkpoints and exact resume.
- :mod:`.sampler`: the seeded infinite data stream, split across ranks.
- :mod:`.ddpm`: the DDPM step (epsilon MSE, hybrid loss with learned sigma).
- :mod:`.pretrain`: data preparation and the whole pretraining run (``smp-diffusion pretrain``).
"""

from smp_diffusion_encoder.training.checkpoint import load_checkpoint, restore_checkpoint, save_checkpoint, unwrap
from smp_diffusion_encoder.training.ddpm import DDPMStep
from smp_diffusion_encoder.training.ema import EMA
from smp_diffusion_encoder.training.loop import EarlyStopping, Step, TrainConfig, Trainer
from smp_diffusion_encoder.training.pretrain import PretrainConfig, prepare_store, run_pretraining
from smp_diffusion_encoder.training.sampler import InfiniteBatchSampler, PositionedDataset

__all__ = [
    "DDPMStep", "EMA", "EarlyStopping", "InfiniteBatchSampler", "PositionedDataset", "PretrainConfig", "Step",
    "TrainConfig", "Trainer", "load_checkpoint", "prepare_store", "restore_checkpoint", "run_pretraining",
    "save_checkpoint", "unwrap",
]
