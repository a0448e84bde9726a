"""Model folders that ``smp-diffusion predict`` can run, and how to write them.

Two formats, told apart by ``config.json``:

1. **A whole smp model** (e.g. ``smp.Unet("ddpm-ct")`` with a trained decoder), saved by
   :func:`save_segmenter`: :func:`~smp_diffusion_encoder.hub.pretrained.save_finetuned`'s
   ``config.json`` (smp constructor arguments + ``_model_class``) and ``model.safetensors``, plus
   ``preprocessing.json`` (``{"hu_window": [lo, hi], "image_size": S}``, a
   :class:`~smp_diffusion_encoder.data.preprocessing.PreprocessingConfig`). smp's saved config has no place for
   the preprocessing, hence the extra file; without it the folder is refused (guessing a HU window
   would silently give wrong predictions).
2. **A head on frozen features** (:class:`ProbeModel`: the linear probe or the MLP ensemble), saved by
   :func:`save_probe`: ``config.json`` = ``{"format": "smp-diffusion-probe", "format_version": 1,
   "encoder": <smp name or null>, "unet": <UNetConfig>, "features": <FeatureConfig>, "probe": {"kind":
   "linear" | "mlp", "num_classes", "channels", "strides"[, "num_models", "hidden"]}, "preprocessing":
   <PreprocessingConfig>}`` and ``model.safetensors`` with ``encoder.unet.*`` (the U-Net, truncated after the
   last feature block) and ``probe.*``. ``channels``/``strides`` are written by the code from the encoder
   and checked against it on load, never typed in. A missing ``kind`` means ``"linear"`` (the first
   files had none).

Both load as a :class:`Segmenter`: ``(B, 1, S, S)`` slices in [-1, 1] -> logits ``(B, K, S, S)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from torch import nn

from smp_diffusion_encoder._io import atomic_path, atomic_write_json, read_json_object
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.encoder.config import EncoderSpec, FeatureConfig
from smp_diffusion_encoder.encoder.features import DiffusionFeatureEncoder
from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.heads.linear_probe import LinearProbe
from smp_diffusion_encoder.heads.mlp_ensemble import EnsembleHead
from smp_diffusion_encoder.hub.pretrained import load_finetuned, save_finetuned
from smp_diffusion_encoder.hub.weights import CONFIG_NAME, WEIGHTS_NAME, architecture_for, read_safetensors
from smp_diffusion_encoder.inference.postprocess import PostprocessingConfig
from smp_diffusion_encoder.models.config import UNetConfig, resolve_config
from smp_diffusion_encoder.models.unet import DiffusionUNet

PREPROCESSING_NAME = "preprocessing.json"
POSTPROCESSING_NAME = "postprocessing.json"
PROBE_FORMAT = "smp-diffusion-probe"
PROBE_FORMAT_VERSION = 1


HeadKind = Literal["linear", "mlp"]


class ProbeModel(nn.Module):
    """Frozen diffusion features + a head: ``(B, 1, H, W)`` in [-1, 1] -> logits ``(B, K, H, W)``.

    The head is a :class:`LinearProbe` or an :class:`~smp_diffusion_encoder.heads.EnsembleHead` (whose
    "logits" are log vote fractions, see there).

    Wraps the encoder the probe was trained on (e.g. the one behind a
    :class:`~smp_diffusion_encoder.heads.FeatureCache`) and truncates its U-Net after the last decoder
    block the features use (it never runs the later ones), so the state dict holds exactly the weights
    in use. :meth:`build` makes a fresh one from configs.

    Example:
        >>> model = ProbeModel.build("tiny", FeatureConfig(timesteps=(50,)), num_classes=14)
        >>> model(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 14, 64, 64])
    """

    def __init__(self, encoder: DiffusionFeatureEncoder, probe: LinearProbe | EnsembleHead) -> None:
        super().__init__()
        if type(encoder) is not DiffusionFeatureEncoder:
            raise ConfigError(f"ProbeModel needs a plain DiffusionFeatureEncoder, got {type(encoder).__name__}")
        if (probe.channels, probe.strides) != (encoder.channels, encoder.strides):
            raise ConfigError(
                f"probe expects channels {probe.channels} at strides {probe.strides}; the encoder gives "
                f"{encoder.channels} at {encoder.strides}"
            )
        encoder.unet.truncate(max(encoder.blocks))
        self.encoder = encoder
        self.probe = probe

    @classmethod
    def build(
        cls,
        unet: UNetConfig | str | dict[str, Any],
        features: FeatureConfig | None,
        num_classes: int,
        *,
        head: HeadKind = "linear",
        num_models: int = 10,
        hidden: tuple[int, ...] = (128, 32),
    ) -> ProbeModel:
        """A new model: ``DiffusionUNet(unet)`` features (random weights) and a head with derived shapes.

        ``num_models`` and ``hidden`` apply to ``head="mlp"`` only.
        """
        encoder = DiffusionFeatureEncoder(DiffusionUNet(unet), features)
        if head == "linear":
            return cls(encoder, LinearProbe(encoder.channels, encoder.strides, num_classes))
        if head == "mlp":
            return cls(encoder, EnsembleHead(encoder.channels, encoder.strides, num_classes, num_models, hidden))
        raise ConfigError(f"head must be 'linear' or 'mlp', got {head!r}")

    @property
    def head_config(self) -> dict[str, Any]:
        """The ``"probe"`` entry of the folder's ``config.json``."""
        out: dict[str, Any] = {
            "kind": "linear" if isinstance(self.probe, LinearProbe) else "mlp",
            "num_classes": self.probe.num_classes,
            "channels": list(self.probe.channels),
            "strides": list(self.probe.strides),
        }
        if isinstance(self.probe, EnsembleHead):
            out.update(num_models=self.probe.ensemble.num_models, hidden=list(self.probe.ensemble.hidden))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(self.encoder(x), x.shape[-2:])


@dataclass(frozen=True)
class Segmenter:
    """A loaded model folder: ``module`` maps ``(B, 1, S, S)`` -> ``(B, num_classes, S, S)`` logits.

    (Not to be confused with smp's ``SegmentationModel`` base class: this is the module plus what
    inference needs to feed it: its preprocessing, class count and origin.)"""

    module: nn.Module
    preprocessing: PreprocessingConfig
    num_classes: int
    kind: Literal["smp", "probe"]
    source: Path
    postprocessing: PostprocessingConfig = PostprocessingConfig()


def save_probe(model: ProbeModel, out_dir: str | os.PathLike[str], preprocessing: PreprocessingConfig) -> Path:
    """Write ``model`` as a probe folder (format 2 above); files replaced atomically, config last."""
    enc = model.encoder
    unet_cfg = enc.unet.config
    config = {
        "format": PROBE_FORMAT,
        "format_version": PROBE_FORMAT_VERSION,
        "encoder": architecture_for(EncoderSpec(unet_cfg, enc.features))[1],
        "unet": unet_cfg.to_dict(),
        "features": enc.features.to_dict(),
        "probe": model.head_config,
        "preprocessing": preprocessing.to_dict(),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()
    }
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    atomic_write_json(out / CONFIG_NAME, config)
    return out


def load_probe(model_dir: str | os.PathLike[str]) -> Segmenter:
    """Load a folder written by :func:`save_probe` (eval mode, CPU)."""
    folder = Path(model_dir)
    config = _read_json(folder / CONFIG_NAME)
    if config.get("format") != PROBE_FORMAT:
        raise WeightsError(f"{folder / CONFIG_NAME}: not a probe config (format {config.get('format')!r})")
    if config.get("format_version") != PROBE_FORMAT_VERSION:
        raise WeightsError(f"{folder / CONFIG_NAME}: unsupported probe format_version {config.get('format_version')!r}")
    try:
        unet = resolve_config(config["unet"])
        features = FeatureConfig.from_dict(config["features"])
        head = config["probe"]
        prep = PreprocessingConfig.from_dict(config["preprocessing"])
        kind = head.get("kind", "linear")
        extra = (
            {"num_models": int(head["num_models"]), "hidden": tuple(int(h) for h in head["hidden"])}
            if kind == "mlp"
            else {}
        )
        model = ProbeModel.build(unet, features, int(head["num_classes"]), head=kind, **extra)
    except (KeyError, TypeError, ValueError, ConfigError) as err:
        raise WeightsError(f"{folder / CONFIG_NAME}: malformed probe config ({err})") from err
    derived = {"channels": list(model.probe.channels), "strides": list(model.probe.strides)}
    recorded = {k: [int(v) for v in head.get(k, [])] for k in derived}
    if recorded != derived:
        raise WeightsError(f"{folder / CONFIG_NAME}: probe shapes {recorded} do not match the encoder's {derived}")
    if not (folder / WEIGHTS_NAME).is_file():
        raise WeightsError(f"{folder}: missing {WEIGHTS_NAME}")
    state = read_safetensors(folder / WEIGHTS_NAME, source=str(folder / WEIGHTS_NAME))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"{folder / WEIGHTS_NAME}: weights do not match the probe config ({err})") from err
    return Segmenter(model.eval(), prep, model.probe.num_classes, "probe", folder, read_postprocessing(folder))


def save_segmenter(model: nn.Module, out_dir: str | os.PathLike[str], preprocessing: PreprocessingConfig) -> Path:
    """Write a whole smp model (format 1 above): ``save_finetuned`` + ``preprocessing.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / PREPROCESSING_NAME, preprocessing.to_dict())
    return save_finetuned(model, out)


def load_model(model_dir: str | os.PathLike[str]) -> Segmenter:
    """Load either format from a local folder (eval mode, CPU); errors are :class:`WeightsError`."""
    folder = Path(model_dir)
    if not (folder / CONFIG_NAME).is_file():
        raise WeightsError(f"{folder}: not a model folder (no {CONFIG_NAME})")
    config = _read_json(folder / CONFIG_NAME)
    if config.get("format") == PROBE_FORMAT:
        return load_probe(folder)
    if "_model_class" not in config:
        raise WeightsError(
            f"{folder / CONFIG_NAME}: neither an smp model (no _model_class) nor a probe (format {PROBE_FORMAT!r})"
        )
    if not (folder / PREPROCESSING_NAME).is_file():
        raise WeightsError(
            f"{folder}: no {PREPROCESSING_NAME}; the HU window and image size the model was trained with are "
            f"unknown (write it with smp_diffusion_encoder.inference.save_segmenter)"
        )
    try:
        prep = PreprocessingConfig.from_dict(_read_json(folder / PREPROCESSING_NAME))
    except ConfigError as err:
        raise WeightsError(f"{folder / PREPROCESSING_NAME}: {err}") from err
    module = load_finetuned(folder).eval()
    head = getattr(module, "segmentation_head", None)
    num_classes = head[0].out_channels if isinstance(head, nn.Sequential) else int(config.get("classes", 1))
    if num_classes < 2:
        raise WeightsError(
            f"{folder}: predict needs a multi-class model (softmax over >= 2 classes), got {num_classes}"
        )
    return Segmenter(module, prep, num_classes, "smp", folder, read_postprocessing(folder))


def write_postprocessing(out_dir: str | os.PathLike[str], postprocessing: PostprocessingConfig) -> Path:
    """Record what ``predict`` does after the model in ``out_dir/postprocessing.json`` (either format)."""
    path = Path(out_dir) / POSTPROCESSING_NAME
    atomic_write_json(path, postprocessing.to_dict())
    return path


def read_postprocessing(model_dir: str | os.PathLike[str]) -> PostprocessingConfig:
    """A model folder's :class:`PostprocessingConfig`; folders without ``postprocessing.json`` (written before
    it existed) get none."""
    path = Path(model_dir) / POSTPROCESSING_NAME
    if not path.is_file():
        return PostprocessingConfig()
    try:
        return PostprocessingConfig.from_dict(_read_json(path))
    except (TypeError, ConfigError) as err:
        raise WeightsError(f"{path}: {err}") from err


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, lambda problem: WeightsError(f"{path}: {problem}"))
