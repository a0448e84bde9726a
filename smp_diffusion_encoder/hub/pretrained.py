"""Whole fine-tuned smp models: save and load without re-downloading the encoder weights.

``model.save_pretrained(dir)`` records the constructor arguments, including ``encoder_weights``; a plain
``smp.from_pretrained(dir)`` would then fetch the pretrained encoder weights again, only to overwrite them
with the fine-tuned ones. :func:`save_finetuned` writes ``encoder_weights: null`` instead (every weight is
in the file), and :func:`load_finetuned` loads safetensors only (never ``pytorch_model.bin``, which the
mixin's fallback would unpickle), passing ``encoder_weights=None``. For a folder saved by plain
``save_pretrained``, ``smp.from_pretrained(dir, encoder_weights=None)`` is the equivalent.

Example:
    >>> save_finetuned(model, "runs/flare-unet")                            # doctest: +SKIP
    >>> model = load_finetuned("runs/flare-unet")                           # doctest: +SKIP
    >>> model = load_finetuned("my-org/flare-unet", revision="ab" * 20)     # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch

from smp_diffusion_encoder._io import make_temp_dir, publish_file
from smp_diffusion_encoder.errors import WeightsError
from smp_diffusion_encoder.hub.download import download_file
from smp_diffusion_encoder.hub.weights import (
    CARD_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
    _no_safetensors_message,
    fetch_weights_file,
    read_safetensors,
    validate_safetensors,
)


def save_finetuned(model: torch.nn.Module, save_dir: str | os.PathLike[str], **kwargs: Any) -> Path:
    """``model.save_pretrained(save_dir, **kwargs)`` with ``encoder_weights=None``; files replaced atomically.

    ``kwargs`` go to smp's ``save_pretrained`` (e.g. ``metrics=...``, ``dataset=...`` for its card).

    Example:
        >>> model = smp.Unet("ddpm-ct-tiny", encoder_weights=None, in_channels=1, classes=3)
        >>> save_finetuned(model, "runs/tiny")                                  # doctest: +SKIP
        PosixPath('runs/tiny')
    """
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or not hasattr(model, "save_pretrained"):
        raise WeightsError(f"{type(model).__name__} is not an smp model (no save_pretrained/config)")
    out = Path(save_dir)
    out.mkdir(parents=True, exist_ok=True)
    had, old = "encoder_weights" in config, config.get("encoder_weights")
    config["encoder_weights"] = None
    tmp = make_temp_dir(f".{out.name}.tmp-", out)
    try:
        model.save_pretrained(tmp, **kwargs)
        for name in (WEIGHTS_NAME, CARD_NAME, CONFIG_NAME):  # config last: a folder with it is complete
            if (tmp / name).is_file():
                publish_file(tmp / name, out / name)  # umask mode: safetensors writes its file 0600
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if had:
            config["encoder_weights"] = old
        else:
            config.pop("encoder_weights", None)
    return out


def load_finetuned(
    path_or_repo: str | os.PathLike[str], *, revision: str | None = None, **kwargs: Any
) -> torch.nn.Module:
    """A whole smp model from a folder or Hub repo saved by ``save_pretrained``; safetensors only.

    The encoder's pretrained weights are never fetched (``encoder_weights=None``): the file holds all
    weights. From the Hub exactly two files are downloaded (``config.json``, ``model.safetensors``) and the
    model is built from the cached snapshot, so no further request is made. Extra ``kwargs`` override
    constructor arguments of the saved config. The model is returned in eval mode; nothing is printed.

    Example:
        >>> model = load_finetuned("runs/tiny")                                  # doctest: +SKIP
        >>> model(torch.zeros(1, 1, 64, 64)).shape                               # doctest: +SKIP
        torch.Size([1, 3, 64, 64])
    """
    local = Path(path_or_repo)
    if local.is_dir():
        folder, source = local, str(local)
        if not (folder / WEIGHTS_NAME).is_file():
            raise WeightsError(_no_safetensors_message(source, [p.name for p in folder.iterdir()]))
        validate_safetensors(folder / WEIGHTS_NAME, source=f"{source}/{WEIGHTS_NAME}")
    else:
        repo = str(path_or_repo)
        source = f"{repo}@{revision}" if revision else repo
        config_path = Path(download_file(repo, CONFIG_NAME, revision=revision))
        weights_path = fetch_weights_file(repo, revision=revision)
        folder = config_path.parent
        if weights_path.parent != folder:  # both come from one snapshot of the cache
            raise WeightsError(f"{source}: config.json and model.safetensors resolved to different snapshots")
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        model_class = config["_model_class"]
    except (OSError, ValueError, KeyError) as err:
        raise WeightsError(f"{source}/{CONFIG_NAME}: not an smp save_pretrained config ({err})") from err
    cls = getattr(smp, str(model_class), None)
    if not isinstance(cls, type):
        raise WeightsError(f"{source}/{CONFIG_NAME}: unknown smp model class {model_class!r}")
    # Built here rather than by smp.from_pretrained, which prints "Loading weights from local directory" and
    # falls back to pickle files: the constructor arguments come from the config, every weight from the
    # validated safetensors file.
    accepted = inspect.signature(cls.__init__).parameters
    arguments = {k: v for k, v in config.items() if not k.startswith("_") and k in accepted}
    arguments.update(kwargs, encoder_weights=None)
    try:
        model = cls(**arguments)
        model.load_state_dict(read_safetensors(folder / WEIGHTS_NAME, source=f"{source}/{WEIGHTS_NAME}"), strict=True)
    except (KeyError, RuntimeError, TypeError) as err:  # unknown encoder name, strict load mismatch, bad arguments
        raise WeightsError(f"{source}: cannot rebuild the smp model ({err})") from err
    return model.eval()
