"""Few-shot fine-tuning through the one shared training loop: swap the step, not the loop.

- :mod:`.config`: :class:`FinetuneConfig`, the job's settings (no torch; the CLI is built from it).
- :mod:`.schedule`: the schedule rule (steps, warm-up and cosine decay, when to validate).
- :mod:`.losses`: cross-entropy + multi-class soft Dice over present classes.
- :mod:`.steps`: :class:`ProbeStep`, :class:`MLPStep`, :class:`DecoderStep` (smp decoder on a frozen, optionally
  later unfrozen, encoder).
- :mod:`.data`: labeled slices, few-shot split with disjoint validation slices; :mod:`.batches`: batches.
- :mod:`.api`: :func:`finetune` (``smp-diffusion finetune``) and :class:`FinetuneResult`.
- :mod:`.ensemble`: ``--ensemble N``, N runs on the same slices as one model (``finetune`` hands it over);
  :mod:`.result`: :class:`FinetuneResult`, the run folder's file names, the settings a run records.
- :mod:`.selection`: :func:`select_features` (``smp-diffusion select-features``): timesteps and blocks for
  the user's data, scored with the linear probe.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "api": ["FinetuneResult", "finetune", "mean_slice_dice"],
        "config": ["FinetuneConfig"],
        "losses": ["ce_dice_loss", "soft_dice_present"],
        "schedule": ["SchedulePlan", "plan_schedule"],
        "selection": ["SelectionResult", "select_features"],
        "selection_config": ["SelectionConfig"],
        "steps": ["DecoderStep", "MLPStep", "ProbeStep", "decoder_param_groups"],
    },
)
