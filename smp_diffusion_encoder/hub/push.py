"""Publish a weights folder to the Hugging Face Hub and get back the commit to pin.

Uses ``huggingface_hub.HfApi`` (``create_repo`` + ``upload_folder``); the token comes from the
argument, ``HF_TOKEN`` or ``hf auth login``. Only ``config.json``, ``model.safetensors`` and
``README.md`` are uploaded, and a folder holding pickle weights is refused outright.

Pinning: register the returned 40-hex commit (``register_hub_weights(..., revision=sha)``,
``pretrained_settings``), never a branch name, and record it in CHANGELOG.md.

Example:
    >>> sha = push_encoder_weights("out/ddpm-ct", "my-org/ddpm-ct-flare")   # doctest: +SKIP
    >>> len(sha)                                                             # doctest: +SKIP
    40
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from smp_diffusion_encoder._hub import is_commit
from smp_diffusion_encoder.errors import WeightsError
from smp_diffusion_encoder.formats.encoder_weights import open_encoder_weights
from smp_diffusion_encoder.formats.folder import (
    CARD_NAME,
    CONFIG_NAME,
    PICKLE_SUFFIXES,
    WEIGHTS_NAME,
    no_safetensors_message,
    validate_safetensors,
)

UPLOADED = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)


def push_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    branch: str | None = None,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
) -> str:
    """Upload ``config.json`` + ``model.safetensors`` (+ ``README.md``) of ``folder``; return the commit sha.

    Works for encoder weights folders and for whole models saved by
    :func:`~smp_diffusion_encoder.formats.save_finetuned`. Creates the
    repo (and ``branch``) if needed.

    Example:
        >>> push_folder("runs/flare-unet", "my-org/flare-unet", private=True)  # doctest: +SKIP
        '3f1c...'
    """
    path = Path(folder)
    if not path.is_dir():
        raise WeightsError(f"{path}: not a folder")
    names = [p.name for p in path.iterdir()]
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if WEIGHTS_NAME not in names:
        raise WeightsError(no_safetensors_message(str(path), names))
    if pickles:
        raise WeightsError(f"{path}: holds pickle weight files {pickles}; remove them before publishing")
    if CONFIG_NAME not in names:
        raise WeightsError(f"{path}: missing {CONFIG_NAME}")
    validate_safetensors(path / WEIGHTS_NAME, source=f"{path}/{WEIGHTS_NAME}")
    api = HfApi(token=token)
    target = f"{repo_id}@{branch or 'main'}"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if branch and branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(path),
            revision=branch,
            commit_message=commit_message or f"Upload {path.name} with smp_diffusion_encoder",
            allow_patterns=[n for n in UPLOADED if n in names],
        )
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise WeightsError(f"{path} -> {target}: push failed ({type(err).__name__}: {err})") from err
    sha = str(info.oid)
    if not is_commit(sha):
        raise WeightsError(f"{path} -> {target}: the Hub answered commit id {sha!r}, not a 40-hex sha")
    return sha


def push_encoder_weights(folder: str | os.PathLike[str], repo_id: str, **options: Any) -> str:
    """Validate an encoder weights folder (config, header, strict architecture check) and push it.

    ``options``: those of :func:`push_folder` (``branch``, ``token``, ``private``, ``commit_message``). Returns the
    40-hex commit sha to pin in ``register_hub_weights`` and record in CHANGELOG.md.

    Example:
        >>> push_encoder_weights("out/ddpm-ct", "my-org/ddpm-ct-flare", branch="v1")  # doctest: +SKIP
        '3f1c...'
    """
    open_encoder_weights(folder).state_dict()  # raises WeightsError on anything unloadable
    return push_folder(folder, repo_id, **options)
