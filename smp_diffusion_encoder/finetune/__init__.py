"""Few-shot fine-tuning through the one shared training loop: swap the step, not the loop.

- :mod:`.losses`: cross-entropy + multi-class soft Dice over present classes.
- :mod:`.steps`: :class:`ProbeStep` (linear probe on cached features), :class:`DecoderStep` (smp decoder on a
  frozen, optionally later unfrozen, encoder).
- :mod:`.data`: labeled slices, few-shot split with disjoint validation slices.
- :mod:`.api`: :func:`finetune` (``smp-diffusion finetune``).
"""

from smp_diffusion_encoder.finetune.api import finetune, mean_slice_dice, preprocessing_for
from smp_diffusion_encoder.finetune.losses import ce_dice_loss, soft_dice_present
from smp_diffusion_encoder.finetune.steps import DecoderStep, ProbeStep, decoder_param_groups

__all__ = ["DecoderStep", "ProbeStep", "ce_dice_loss", "decoder_param_groups", "finetune", "mean_slice_dice",
           "preprocessing_for", "soft_dice_present"]
