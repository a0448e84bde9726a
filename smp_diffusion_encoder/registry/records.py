"""What an encoder name means, as typed records (plain data, no torch, no disk writes).

Every name this package gives smp or timm is an :class:`EncoderRecord` in one table: the built-in
variants (:data:`~smp_diffusion_encoder.encoder.variants.VARIANTS`) with their packaged default weights,
plus the names a user registers at run time. :func:`resolve` answers "what is ``ddpm-ct``?" (an smp name)
or "what is ``ddpm_ct_unet``?" (a timm name); the writers in :mod:`.smp_names` and :mod:`.timm_names`
turn records into registry entries of smp and timm.

Weights of a record, by key (the value of smp's ``encoder_weights``):

* :class:`PackagedWeights`: a folder shipped inside the package (``smp_diffusion_encoder/weights/<smp
  name>/``, or ``$SMP_DIFFUSION_WEIGHTS_DIR/<smp name>/``), registered as ``"ct"`` and ``"imagenet"``
  (smp's default value; no ImageNet weights exist for a CT diffusion model, so it is an alias);
* :class:`HubWeights`: a Hugging Face Hub repo pinned to a 40-hex commit.

Example:
    >>> record = resolve("ddpm-ct-tiny")
    >>> record.timm_name, record.spec.unet.image_size
    ('ddpm_ct_unet_tiny', 64)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from smp_diffusion_encoder.encoder.config import EncoderSpec
from smp_diffusion_encoder.encoder.variants import VARIANTS
from smp_diffusion_encoder.errors import ConfigError

WEIGHTS_DIR_ENV = "SMP_DIFFUSION_WEIGHTS_DIR"
#: Hub-style repo ids of packaged weights in the HF cache (never contacted: pinned to a content hash).
PACKAGED_ORG = "smp-diffusion"
#: Weight keys of packaged default weights ("imagenet" is smp's default ``encoder_weights``).
DEFAULT_KEYS = ("ct", "imagenet")
#: Name prefixes that smp's decoders treat specially (REFERENCE: smp 0.6 branches on them).
FORBIDDEN_PREFIXES = ("tu-", "timm-", "mit_b", "vgg")


@dataclass(frozen=True)
class HubWeights:
    """Weights in a Hugging Face Hub repo (``config.json`` + ``model.safetensors``) at a 40-hex commit."""

    repo_id: str
    revision: str

    def describe(self) -> str:
        return f"{self.repo_id}@{self.revision}"


@dataclass(frozen=True)
class PackagedWeights:
    """Weights shipped in ``folder`` (``config.json`` + ``model.safetensors``); seeded into the HF cache as
    ``repo_id`` at a content-hash revision the first time smp asks for them."""

    folder: Path
    repo_id: str

    def describe(self) -> str:
        return f"packaged {self.folder}"


WeightsSource = HubWeights | PackagedWeights


@dataclass(frozen=True)
class EncoderRecord:
    """One registered encoder name.

    Attributes:
        smp_name: the smp encoder name (``smp.Unet(encoder_name=...)``).
        timm_name: the timm model name, or ``None`` (names registered at run time are smp names only).
        spec: U-Net architecture and feature selection.
        weights: weights by key; packaged default weights appear under every :data:`DEFAULT_KEYS` key.
    """

    smp_name: str
    timm_name: str | None
    spec: EncoderSpec
    weights: Mapping[str, WeightsSource] = field(default_factory=dict)

    @property
    def default_weights(self) -> str | None:
        """``"ct"`` when the name has default CT weights (packaged or given under that key), else ``None``."""
        return "ct" if "ct" in self.weights else None

    @property
    def packaged(self) -> PackagedWeights | None:
        source = self.weights.get("ct")
        return source if isinstance(source, PackagedWeights) else None

    def with_weights(self, key: str, source: WeightsSource) -> EncoderRecord:
        return replace(self, weights={**self.weights, key: source})


def packaged_weights_root() -> Path:
    """``$SMP_DIFFUSION_WEIGHTS_DIR`` if set, else the package's ``weights/`` folder."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parent.parent / "weights"


def packaged_weights(smp_name: str) -> PackagedWeights | None:
    """The packaged weights of ``smp_name`` if its folder holds both files (two ``stat`` calls, no reads)."""
    folder = packaged_weights_root() / smp_name
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return PackagedWeights(folder, f"{PACKAGED_ORG}/{smp_name}")
    return None


def _builtin_records() -> dict[str, EncoderRecord]:
    table = {}
    for v in VARIANTS:
        packaged = packaged_weights(v.smp_name)
        weights = dict.fromkeys(DEFAULT_KEYS, packaged) if packaged else {}
        table[v.smp_name] = EncoderRecord(v.smp_name, v.timm_name, v.spec, weights)
    return table


_TABLE: dict[str, EncoderRecord] = _builtin_records()


def all_records() -> list[EncoderRecord]:
    """Every registered record, built-in variants first."""
    return list(_TABLE.values())


def resolve(name: str) -> EncoderRecord:
    """The record of an smp or timm name; an unknown name raises ``KeyError`` listing the known ones."""
    for record in _TABLE.values():
        if name in (record.smp_name, record.timm_name):
            return record
    raise KeyError(f"{name!r} is not a registered ddpm-ct encoder; known: {sorted(_TABLE)}")


def is_registered(name: str) -> bool:
    return any(name in (r.smp_name, r.timm_name) for r in _TABLE.values())


def put(record: EncoderRecord) -> EncoderRecord:
    """Add or replace ``record`` in the table (the writers then give smp the new entry)."""
    if record.smp_name.startswith(FORBIDDEN_PREFIXES):
        raise ConfigError(
            f"encoder name {record.smp_name!r} must not start with {FORBIDDEN_PREFIXES} (smp treats those specially)"
        )
    _TABLE[record.smp_name] = record
    return record
