"""Default weights shipped inside the package, made loadable offline by smp's own Hub loader.

smp's ``get_encoder`` only knows ``hf_hub_download(repo_id, file, revision=<40 hex>)``, and with a commit
revision that is already in the Hugging Face cache no request is made. :func:`seed_packaged_weights` copies
a packaged weights folder into the HF cache as a snapshot of a fixed repo id (``smp-diffusion/<smp
name>``) at a revision derived from the content (:func:`~smp_diffusion_encoder.hub.weights.hash_folder`)
and returns that revision. The registry calls it the first time smp asks for the weights (never on
import). Seeding is idempotent and atomic per file. If the HF cache is read-only, the snapshot goes to our
own cache (``$SMP_DIFFUSION_CACHE``, default ``~/.cache/smp_diffusion_encoder/hub``) with a warning: smp
then finds it only with ``HF_HUB_CACHE`` pointing there (timm, which reads the packaged file directly, is
unaffected).

Example:
    >>> revision = seed_packaged_weights(Path("weights/ddpm-ct"), "smp-diffusion/ddpm-ct")   # doctest: +SKIP
    >>> len(revision)                                                                        # doctest: +SKIP
    40
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

from huggingface_hub import constants

from smp_diffusion_encoder._io import atomic_path, read_json_object
from smp_diffusion_encoder.encoder.config import EncoderSpec
from smp_diffusion_encoder.errors import WeightsError
from smp_diffusion_encoder.hub.weights import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, config_spec, hash_folder

FALLBACK_CACHE_ENV = "SMP_DIFFUSION_CACHE"


def fallback_cache_dir() -> Path:
    env = os.environ.get(FALLBACK_CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "smp_diffusion_encoder" / "hub"


def seed_hf_cache(
    folder: str | os.PathLike[str], repo_id: str, revision: str, cache_dir: str | os.PathLike[str]
) -> Path:
    """Copy ``folder`` into ``cache_dir`` as the snapshot ``repo_id@revision``; return the snapshot dir.

    Idempotent (files already present are kept: the revision is a content hash) and atomic per file;
    ``model.safetensors`` is written before ``config.json``, so a snapshot with a config is complete.
    Raises ``OSError`` if ``cache_dir`` is not writable.
    """
    storage = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / revision
    for name in (WEIGHTS_NAME, CARD_NAME, CONFIG_NAME):
        src, dst = Path(folder) / name, snapshot / name
        if src.is_file() and not dst.exists():
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
    return snapshot


def seed_packaged_weights(folder: Path, repo_id: str, expected: EncoderSpec) -> str:
    """Check ``folder``'s architecture against ``expected``, seed it into the HF cache, return its revision.

    Raises :class:`WeightsError` when the folder's ``config.json`` is unreadable or describes another
    architecture (e.g. a ``$SMP_DIFFUSION_WEIGHTS_DIR`` folder made for another variant).
    """
    config = read_json_object(folder / CONFIG_NAME, lambda problem: WeightsError(f"{folder / CONFIG_NAME}: {problem}"))
    differences = config_spec(config, source=str(folder)).differences(expected)
    if differences:
        raise WeightsError(f"packaged weights {folder} do not match their encoder: " + "; ".join(differences))
    revision = hash_folder(folder)
    try:
        seed_hf_cache(folder, repo_id, revision, constants.HF_HUB_CACHE)
    except OSError as err:
        fallback = fallback_cache_dir()
        try:
            seed_hf_cache(folder, repo_id, revision, fallback)
        except OSError as err2:
            warnings.warn(
                f"packaged weights {folder} could not be seeded into the Hugging Face cache "
                f"{constants.HF_HUB_CACHE} ({err}) nor into {fallback} ({err2}); smp will not find them "
                f"offline. timm.create_model(..., pretrained=True) still works.",
                stacklevel=2,
            )
        else:
            warnings.warn(
                f"the Hugging Face cache {constants.HF_HUB_CACHE} is not writable ({err}); packaged weights "
                f"{folder} were seeded into {fallback} instead. Set HF_HUB_CACHE={fallback} (before importing "
                f"smp) so smp finds them; timm is unaffected.",
                stacklevel=2,
            )
    return revision
