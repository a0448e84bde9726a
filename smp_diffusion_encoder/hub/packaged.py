"""Default weights shipped inside the package, loadable offline through smp's and timm's own code.

Packaged weights live in ``smp_diffusion_encoder/weights/<smp name>/{config.json,model.safetensors,
README.md}`` (or under ``$SMP_DIFFUSION_WEIGHTS_DIR/<smp name>/``, which replaces the packaged folder).

smp: ``get_encoder`` only knows ``hf_hub_download(repo_id, file, revision=<40 hex>)``, and with a commit
revision that is already in the Hugging Face cache no request is made. So at registration (on package
import) the folder is *seeded* into the HF cache as a snapshot of the fixed repo id
``smp-diffusion/<smp name>`` at a revision derived from the content (:func:`hash_folder`), and the
variant gets ``pretrained_settings = {"ct": ..., "imagenet": <same>}``. Seeding is cheap (a hash and,
the first time, a copy), idempotent and atomic per file. If the HF cache is read-only, the snapshot goes
to our own cache (``$SMP_DIFFUSION_CACHE``, default ``~/.cache/smp_diffusion_encoder/hub``) with a
warning: smp then finds it only with ``HF_HUB_CACHE`` pointing there (timm is unaffected).

Decision: for ``ddpm-ct*`` encoders ``encoder_weights="imagenet"`` (smp's default) is an alias of the
default CT weights ``"ct"``, since no ImageNet weights exist; ``None`` means random init. A variant
without packaged weights registers no key (``smp.Unet("ddpm-ct")`` then needs ``encoder_weights=None``).

timm: the variant's pretrained cfg gets ``file=<packaged model.safetensors>``, so
``timm.create_model("ddpm_ct_unet", pretrained=True)`` works offline.

Example:
    >>> packaged_repo_id("ddpm-ct")
    'smp-diffusion/ddpm-ct'
    >>> import segmentation_models_pytorch as smp  # once weights/ddpm-ct/ ships, "ct" weights load by default:
    >>> model = smp.Unet("ddpm-ct", in_channels=1, classes=14)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

from huggingface_hub import constants

from smp_diffusion_encoder._io import atomic_path
from smp_diffusion_encoder.hub.weights import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, hash_folder

WEIGHTS_DIR_ENV = "SMP_DIFFUSION_WEIGHTS_DIR"
FALLBACK_CACHE_ENV = "SMP_DIFFUSION_CACHE"
PACKAGED_ORG = "smp-diffusion"
#: Weight keys registered for a variant with packaged weights ("imagenet" is smp's default value).
DEFAULT_KEYS = ("ct", "imagenet")


def packaged_weights_root() -> Path:
    """``$SMP_DIFFUSION_WEIGHTS_DIR`` if set, else the package's ``weights/`` folder."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parent.parent / "weights"


def packaged_folder(smp_name: str) -> Path | None:
    """The packaged weights folder of variant ``smp_name``, or ``None`` if it ships none."""
    folder = packaged_weights_root() / smp_name
    if (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file():
        return folder
    return None


def packaged_repo_id(smp_name: str) -> str:
    """Fixed Hub-style repo id under which packaged weights are seeded (never contacted: pinned + cached)."""
    return f"{PACKAGED_ORG}/{smp_name}"


def fallback_cache_dir() -> Path:
    env = os.environ.get(FALLBACK_CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "smp_diffusion_encoder" / "hub"


def seed_hf_cache(folder: str | os.PathLike[str], repo_id: str, revision: str, cache_dir: str | os.PathLike[str]) -> Path:
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


def packaged_pretrained_settings(smp_name: str) -> dict[str, dict[str, str]]:
    """``pretrained_settings`` for variant ``smp_name``: the seeded packaged weights, or ``{}``.

    Example:
        >>> packaged_pretrained_settings("no-such-variant")
        {}
    """
    folder = packaged_folder(smp_name)
    if folder is None:
        return {}
    problem = _mismatch(folder, smp_name)
    if problem:
        warnings.warn(f"packaged weights {folder} ignored: {problem}", stacklevel=2)
        return {}
    repo_id, revision = packaged_repo_id(smp_name), hash_folder(folder)
    try:
        seed_hf_cache(folder, repo_id, revision, constants.HF_HUB_CACHE)
    except OSError as err:
        fallback = fallback_cache_dir()
        try:
            seed_hf_cache(folder, repo_id, revision, fallback)
        except OSError as err2:
            warnings.warn(
                f"packaged weights of {smp_name!r} could not be seeded into the Hugging Face cache "
                f"{constants.HF_HUB_CACHE} ({err}) nor into {fallback} ({err2}); smp will not find them "
                f"offline. timm.create_model(..., pretrained=True) still works.",
                stacklevel=2,
            )
        else:
            warnings.warn(
                f"the Hugging Face cache {constants.HF_HUB_CACHE} is not writable ({err}); the packaged "
                f"weights of {smp_name!r} were seeded into {fallback} instead. Set HF_HUB_CACHE={fallback} "
                f"(before importing smp) so smp.Unet({smp_name!r}) finds them; timm is unaffected.",
                stacklevel=2,
            )
    setting = {"repo_id": repo_id, "revision": revision}
    return {key: dict(setting) for key in DEFAULT_KEYS}


def _mismatch(folder: Path, smp_name: str) -> str | None:
    """Why ``folder``'s config.json does not describe variant ``smp_name`` (``None`` if it does)."""
    from smp_diffusion_encoder.encoder.variants import get_variant
    from smp_diffusion_encoder.models.config import resolve_config

    v = get_variant(smp_name)
    try:
        args = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))["model_args"]
        same = args["unet"] == resolve_config(v.preset).to_dict() and args["features"] == v.features.to_dict()
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable {CONFIG_NAME} ({err})"
    return None if same else f"its model_args do not match the {smp_name!r} variant ({v.preset} preset)"


def packaged_timm_cfg(timm_name: str) -> dict[str, str]:
    """Extra timm pretrained-cfg entries for ``timm_name``: ``{"file": <packaged safetensors>}`` or ``{}``."""
    from smp_diffusion_encoder.encoder.variants import get_variant

    smp_name = get_variant(timm_name).smp_name
    folder = packaged_folder(smp_name)
    if folder is None or _mismatch(folder, smp_name):
        return {}
    return {"file": str(folder / WEIGHTS_NAME)}
