"""Writing records into segmentation_models_pytorch's encoder registry (the only module that does).

smp has no entry points: a name is an entry of the dict ``segmentation_models_pytorch.encoders.encoders``,
``{"encoder": cls, "params": {...}, "pretrained_settings": {key: {"repo_id", "revision"}}}``, and
``get_encoder`` builds ``cls(**params, depth=..., output_stride=...)`` then, for ``encoder_weights=key``,
downloads ``config.json`` + ``model.safetensors`` of ``repo_id@revision`` and loads them strictly.

Packaged weights enter as a lazy mapping: its ``"repo_id"`` / ``"revision"`` are computed, and the folder
seeded into the Hugging Face cache (offline, by content revision), the first time smp reads them. Nothing
is hashed or written when the name is registered.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import segmentation_models_pytorch.encoders as smp_encoders

from smp_diffusion_encoder.encoder.config import EncoderSpec, FeatureConfig
from smp_diffusion_encoder.encoder.smp_encoder import DDPMEncoder
from smp_diffusion_encoder.hub.packaged import seed_packaged_weights
from smp_diffusion_encoder.models.config import UNetConfig
from smp_diffusion_encoder.registry.records import (
    EncoderRecord,
    HubWeights,
    PackagedWeights,
    WeightsSource,
    all_records,
    put,
    resolve,
)


class LazyPackagedSettings(Mapping[str, str]):
    """``{"repo_id", "revision"}`` of packaged weights, seeded into the HF cache on first read."""

    def __init__(self, source: PackagedWeights, spec: EncoderSpec) -> None:
        self.source, self.spec = source, spec
        self._settings: dict[str, str] | None = None

    def _materialize(self) -> dict[str, str]:
        if self._settings is None:
            revision = seed_packaged_weights(self.source.folder, self.source.repo_id, self.spec)
            self._settings = {"repo_id": self.source.repo_id, "revision": revision}
        return self._settings

    def __getitem__(self, key: str) -> str:
        return self._materialize()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(("repo_id", "revision"))

    def __len__(self) -> int:
        return 2

    def __repr__(self) -> str:
        return f"LazyPackagedSettings({self.source.folder})"


def smp_entry(record: EncoderRecord) -> dict[str, Any]:
    """The value of ``smp.encoders.encoders[record.smp_name]``."""
    settings: dict[str, Mapping[str, str]] = {}
    lazy: dict[PackagedWeights, LazyPackagedSettings] = {}
    for key, source in record.weights.items():
        if isinstance(source, PackagedWeights):  # "ct" and "imagenet" share one mapping: seeded once
            settings[key] = lazy.setdefault(source, LazyPackagedSettings(source, record.spec))
        else:
            settings[key] = {"repo_id": source.repo_id, "revision": source.revision}
    return {"encoder": DDPMEncoder, "params": record.spec.to_dict(), "pretrained_settings": settings}


def write(record: EncoderRecord) -> None:
    """Give smp the entry of ``record`` (replacing an earlier one of that name)."""
    smp_encoders.encoders[record.smp_name] = smp_entry(record)


def write_all() -> None:
    """Give smp every registered record (idempotent; run when smp is imported)."""
    for record in all_records():
        write(record)


def register_encoder(
    name: str,
    unet: UNetConfig | str | dict[str, Any],
    features: FeatureConfig | None = None,
    weights: Mapping[str, WeightsSource | Mapping[str, str]] | None = None,
) -> EncoderRecord:
    """Make ``smp.<Arch>(encoder_name=name)`` build a :class:`DDPMEncoder` with this architecture.

    ``weights`` maps an ``encoder_weights`` value to a :class:`~.records.HubWeights` (or a dict with
    ``repo_id`` and a 40-hex ``revision``) of a Hub repo holding ``config.json`` + ``model.safetensors``.
    Re-registering a name replaces it. Returns the record (see :func:`~.records.resolve`).

    Example:
        >>> record = register_encoder("my-ddpm", "tiny", FeatureConfig(timesteps=(100,)))
        >>> "my-ddpm" in smp_encoders.encoders, resolve("my-ddpm").spec.features.timesteps
        (True, (100,))
    """
    sources = {
        key: value
        if isinstance(value, (HubWeights, PackagedWeights))
        else HubWeights(str(value["repo_id"]), str(value["revision"]))
        for key, value in (weights or {}).items()
    }
    timm_name = None
    try:
        timm_name = resolve(name).timm_name  # re-registering a built-in keeps its timm name
    except KeyError:
        pass
    record = put(EncoderRecord(name, timm_name, EncoderSpec(unet, features or FeatureConfig()), sources))
    write(record)
    return record
