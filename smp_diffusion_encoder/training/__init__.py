"""Training: one loop (:class:`Trainer`) with swappable steps, lossless atomic checkpoints, DDPM pretraining.

- :mod:`.loop`: :class:`Trainer`, :class:`TrainConfig`, :class:`EarlyStopping` (shared with few-shot heads).
- :mod:`.checkpoint`: complete, atomically written checkpoints and exact resume.
- :mod:`.sampler`: the seeded infinite data stream, split across ranks.
- :mod:`.precision`: fp32 or bf16 autocast, chosen by measurement.
- :mod:`.ddpm`: the DDPM step (epsilon MSE, min-SNR weighting, hybrid loss with learned sigma).
- :mod:`.config`: :class:`PretrainConfig`, the pretraining job's settings (no torch; the CLI is built from it).
- :mod:`.run_folder`: the pretraining run folder's format (written and read only there).
- :mod:`.pretrain`: data preparation and the whole pretraining run (``smp-diffusion pretrain``).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "checkpoint": ["load_checkpoint", "restore_checkpoint", "save_checkpoint", "unwrap"],
        "config": ["PretrainConfig"],
        "ddpm": ["DDPMStep"],
        "ema": ["EMA"],
        "loop": ["EarlyStopping", "Step", "TrainConfig", "Trainer"],
        "pretrain": ["prepare_store", "run_pretraining"],
        "run_folder": ["RunInfo", "load_run"],
        "sampler": ["InfiniteBatchSampler", "PositionedDataset"],
    },
)
