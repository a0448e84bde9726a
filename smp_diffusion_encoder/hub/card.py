"""The model card (``README.md``) of a weights folder, written from facts the caller passes in.

Nothing is invented: every field that is not given is written as "not recorded". The architecture and
preprocessing come from ``config.json`` itself, so card and config cannot disagree.

Card fields (all optional): ``license``, ``pretraining_data`` (e.g. "FLARE 2022 unlabeled, 2000 CT
volumes"), ``pretraining_command`` (the exact command line), ``pretraining_steps``, ``metrics`` (a dict
name -> value, or free text), ``repo_id``, ``revision``, ``notes``, ``citation``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

NOT_RECORDED = "not recorded"
CARD_FIELDS = (
    "license",
    "pretraining_data",
    "pretraining_command",
    "pretraining_steps",
    "metrics",
    "repo_id",
    "revision",
    "notes",
    "citation",
)


def render_model_card(config: Mapping[str, Any], card: Mapping[str, Any]) -> str:
    """Markdown model card with YAML front matter (``license``, ``library_name: timm``, tags).

    Example:
        >>> cfg = {"architecture": "ddpm_ct_unet_tiny", "smp_encoder": "ddpm-ct-tiny", "model_args": {},
        ...        "preprocessing": {"hu_window": [-160.0, 240.0], "image_size": 64}}
        >>> "pretraining data: not recorded" in render_model_card(cfg, {}).lower()
        True
    """
    unknown = sorted(set(card) - set(CARD_FIELDS))
    if unknown:
        from smp_diffusion_encoder.errors import ConfigError

        raise ConfigError(f"unknown model card fields {unknown}; known: {list(CARD_FIELDS)}")

    def field(name: str) -> str:
        value = card.get(name)
        return NOT_RECORDED if value is None or value == "" else str(value)

    arch = config.get("architecture", NOT_RECORDED)
    smp_name = config.get("smp_encoder") or None
    repo = card.get("repo_id") or "ORG/REPO"
    license_ = card.get("license")
    prep = config.get("preprocessing") or {}
    metrics = card.get("metrics")
    if isinstance(metrics, Mapping) and metrics:
        metrics_md = "\n".join(["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in metrics.items()])
    else:
        metrics_md = field("metrics")
    native = (
        f'smp.Unet("{smp_name}", encoder_weights=None, in_channels=1, classes=14)  # then register_hub_weights()'
        if smp_name
        else "register_encoder_from_hub(...)  # architecture differs from the built-in variants"
    )
    lines = [
        "---",
        f"license: {license_ if license_ else 'other'}",
        "library_name: timm",
        "tags: [image-feature-extraction, segmentation, medical-imaging, ct, diffusion, smp_diffusion_encoder]",
        "---",
        f"# {arch}: diffusion-pretrained CT encoder",
        "",
        "Encoder weights of a denoising diffusion U-Net (DDPM) pretrained on unlabeled CT, for use as a",
        "segmentation encoder with segmentation_models_pytorch and timm (package `smp_diffusion_encoder`).",
        "",
        "## Architecture",
        f"- timm architecture: `{arch}`; smp encoder: `{smp_name or NOT_RECORDED}`",
        f"- U-Net and feature config: `model_args` in config.json: "
        f"`{json.dumps(config.get('model_args', {}), sort_keys=True)}`",
        "",
        "## Preprocessing",
        f"- HU window: {prep.get('hu_window', NOT_RECORDED)} mapped to [-1, 1]; {_layout_text(prep)}",
        "",
        "## Pretraining",
        f"- Pretraining data: {field('pretraining_data')}",
        f"- Pretraining command: `{field('pretraining_command')}`",
        f"- Pretraining steps: {field('pretraining_steps')}",
        "",
        "## Metrics",
        metrics_md,
        "",
        "## License",
        field("license"),
        "",
        "## Use",
        "```python",
        "import timm, segmentation_models_pytorch as smp, smp_diffusion_encoder",
        f'backbone = timm.create_model("hf-hub:{repo}", pretrained=True, features_only=True)',
        f'model = smp.Unet("tu-hf-hub:{repo}", encoder_weights=True, in_channels=1, classes=14)',
        native,
        "```",
        "",
        f"- Revision: {field('revision')}",
        f"- Notes: {field('notes')}",
        f"- Citation: {field('citation')}",
        "",
    ]
    return "\n".join(lines)


def _layout_text(prep: dict[str, Any]) -> str:
    """How slices reach the model's size: physical spacing (mm) or the legacy whole field of view."""
    size, spacing = prep.get("image_size", NOT_RECORDED), prep.get("spacing_mm")
    if isinstance(spacing, (int, float)) and isinstance(size, int):
        return (
            f"slices resampled in-plane to {spacing:g} mm pixels, then cropped or padded (air) around the body "
            f"to {size} px ({size * spacing:g} mm)"
        )
    return f"slices padded to square and resized to {size} px (whole field of view, no fixed pixel spacing)"
