"""Weights on the Hugging Face Hub: save, push, load, cache, offline, and safe by construction.

* :func:`save_encoder_weights` / :func:`load_encoder_weights`: the weights folder (``config.json`` +
  ``model.safetensors`` + ``README.md``) that smp, timm and this package all load.
* :func:`push_encoder_weights`: publish it, get the 40-hex commit to pin.
* :func:`register_hub_weights` / :func:`register_encoder_from_hub`: Hub weights under smp names.
* :func:`save_finetuned` / :func:`load_finetuned`: whole fine-tuned smp models without re-downloads.
* :mod:`~smp_diffusion_encoder.hub.packaged`: default weights shipped in the package, offline.

Only safetensors are ever read; pickle files (``pytorch_model.bin``, ``*.pt``, ``*.pth``) are refused.
"""

from smp_diffusion_encoder.hub.card import render_model_card
from smp_diffusion_encoder.hub.download import download_file
from smp_diffusion_encoder.hub.packaged import packaged_folder, packaged_pretrained_settings, seed_hf_cache
from smp_diffusion_encoder.hub.pretrained import load_finetuned, save_finetuned
from smp_diffusion_encoder.hub.push import push_encoder_weights, push_folder
from smp_diffusion_encoder.hub.register import register_encoder_from_hub, register_hub_weights
from smp_diffusion_encoder.hub.weights import (
    build_config,
    hash_folder,
    load_encoder_weights,
    save_encoder_weights,
)

__all__ = [
    "build_config",
    "download_file",
    "hash_folder",
    "load_encoder_weights",
    "load_finetuned",
    "packaged_folder",
    "packaged_pretrained_settings",
    "push_encoder_weights",
    "push_folder",
    "register_encoder_from_hub",
    "register_hub_weights",
    "render_model_card",
    "save_encoder_weights",
    "save_finetuned",
    "seed_hf_cache",
]
