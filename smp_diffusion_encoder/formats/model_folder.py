"""The fine-tuned model folder: what ``smp-diffusion predict --model`` runs, written and read here only.

Two kinds, told apart by ``config.json``:

1. **A whole smp model** (e.g. ``smp.Unet("ddpm-ct")`` with a trained decoder): smp's ``save_pretrained``
   folder (``config.json`` with the constructor arguments and ``_model_class``, ``model.safetensors``, smp's
   ``README.md``), written by :func:`save_finetuned` with ``encoder_weights: null`` (every weight is in the
   file, so loading never fetches the pretrained encoder again), plus ``preprocessing.json``
   (a :class:`~smp_diffusion_encoder.data.preprocessing.PreprocessingConfig`) from :func:`save_segmenter`:
   smp's config has no place for it, and without it :func:`load_model` refuses the folder (guessing a HU
   window would silently give wrong predictions). :func:`load_finetuned` loads safetensors only (never the
   ``pytorch_model.bin`` that smp's mixin would unpickle) from a folder or a Hub repo; a folder saved by plain
   ``save_pretrained`` loads too (``smp.from_pretrained(dir, encoder_weights=None)`` is the plain-smp way).
2. **A head on frozen features** (:class:`~smp_diffusion_encoder.heads.ProbeModel`: the linear probe or the MLP
   ensemble), written by :func:`save_probe`: ``config.json`` = ``{"format": "smp-diffusion-probe",
   "format_version": 1, "encoder": <smp name or null>, "unet": <UNetConfig>, "features": <FeatureConfig>,
   "probe": {"kind": "linear" | "mlp", "num_classes", "channels", "strides"[, "num_models", "hidden"]},
   "preprocessing": <PreprocessingConfig>}`` and ``model.safetensors`` with ``encoder.unet.*`` (the U-Net,
   truncated after the last feature block) and ``probe.*``. ``channels``/``strides`` are written by the code
   from the encoder and checked against it on load, never typed in. A missing ``kind`` means ``"linear"`` (the
   first files had none).

Either kind may hold ``postprocessing.json`` (:class:`~smp_diffusion_encoder.data.postprocess.PostprocessingConfig`:
what ``predict`` does after the model), written by :func:`write_postprocessing`; folders written before it
existed get none.

Both load as a :class:`Segmenter` (:func:`load_model`): ``(B, 1, S, S)`` slices in [-1, 1] -> logits
``(B, K, S, S)``, with the preprocessing it was trained with and its post-processing.

Example:
    >>> save_segmenter(model, "runs/unet/model", preprocessing)             # doctest: +SKIP
    >>> segmenter = load_model("runs/unet/model")                           # doctest: +SKIP
    >>> model = load_finetuned("my-org/flare-unet", revision="ab" * 20)     # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from smp_diffusion_encoder._io import atomic_write_json, make_temp_dir, publish_file
from smp_diffusion_encoder.data.postprocess import PostprocessingConfig
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.encoder.config import EncoderSpec, FeatureConfig
from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.formats.encoder_weights import architecture_for
from smp_diffusion_encoder.formats.folder import (
    CARD_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
    open_folder,
    read_config,
    write_folder,
)
from smp_diffusion_encoder.heads.probe_model import ProbeModel
from smp_diffusion_encoder.models.config import resolve_config

PREPROCESSING_NAME = "preprocessing.json"
POSTPROCESSING_NAME = "postprocessing.json"
PROBE_FORMAT = "smp-diffusion-probe"
PROBE_FORMAT_VERSION = 1


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


def save_finetuned(model: nn.Module, save_dir: str | os.PathLike[str], **kwargs: Any) -> Path:
    """``model.save_pretrained(save_dir, **kwargs)`` with ``encoder_weights=None``; files replaced atomically.

    ``kwargs`` go to smp's ``save_pretrained`` (e.g. ``metrics=...``, ``dataset=...`` for its card).

    Example:
        >>> import segmentation_models_pytorch as smp
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


def load_finetuned(path_or_repo: str | os.PathLike[str], *, revision: str | None = None, **kwargs: Any) -> nn.Module:
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
    import segmentation_models_pytorch as smp

    folder = open_folder(path_or_repo, revision=revision)
    model_class = folder.config.get("_model_class")
    if model_class is None:
        raise WeightsError(f"{folder.source}/{CONFIG_NAME}: not an smp save_pretrained config (no _model_class)")
    cls = getattr(smp, str(model_class), None)
    if not isinstance(cls, type):
        raise WeightsError(f"{folder.source}/{CONFIG_NAME}: unknown smp model class {model_class!r}")
    # Built here rather than by smp.from_pretrained, which prints "Loading weights from local directory" and
    # falls back to pickle files: the constructor arguments come from the config, every weight from the
    # validated safetensors file.
    accepted = inspect.signature(cls.__init__).parameters
    arguments = {k: v for k, v in folder.config.items() if not k.startswith("_") and k in accepted}
    arguments.update(kwargs, encoder_weights=None)
    state = folder.state_dict()
    try:
        model = cls(**arguments)
        model.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError, TypeError) as err:  # unknown encoder name, strict load mismatch, bad arguments
        raise WeightsError(f"{folder.source}: cannot rebuild the smp model ({err})") from err
    return model.eval()


def save_segmenter(model: nn.Module, out_dir: str | os.PathLike[str], preprocessing: PreprocessingConfig) -> Path:
    """Write a whole smp model (kind 1 above): :func:`save_finetuned` + ``preprocessing.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / PREPROCESSING_NAME, preprocessing.to_dict())
    return save_finetuned(model, out)


def save_probe(model: ProbeModel, out_dir: str | os.PathLike[str], preprocessing: PreprocessingConfig) -> Path:
    """Write ``model`` as a probe folder (kind 2 above); files replaced atomically, config last."""
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
    return write_folder(out_dir, model.state_dict(), config)


def load_probe(model_dir: str | os.PathLike[str]) -> Segmenter:
    """Load a folder written by :func:`save_probe` (eval mode, CPU)."""
    folder = Path(model_dir)
    opened = open_folder(folder, check=_check_probe_config)
    config, where = opened.config, folder / CONFIG_NAME
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
        raise WeightsError(f"{where}: malformed probe config ({err})") from err
    derived = {"channels": list(model.probe.channels), "strides": list(model.probe.strides)}
    recorded = {k: [int(v) for v in head.get(k, [])] for k in derived}
    if recorded != derived:
        raise WeightsError(f"{where}: probe shapes {recorded} do not match the encoder's {derived}")
    try:
        model.load_state_dict(opened.state_dict(), strict=True)
    except RuntimeError as err:
        raise WeightsError(f"{folder / WEIGHTS_NAME}: weights do not match the probe config ({err})") from err
    return Segmenter(model.eval(), prep, model.probe.num_classes, "probe", folder, read_postprocessing(folder))


def load_model(model_dir: str | os.PathLike[str]) -> Segmenter:
    """Load either kind from a local folder (eval mode, CPU); errors are :class:`WeightsError`."""
    folder = Path(model_dir)
    if not (folder / CONFIG_NAME).is_file():
        raise WeightsError(f"{folder}: not a model folder (no {CONFIG_NAME})")
    config = read_config(folder / CONFIG_NAME)
    if config.get("format") == PROBE_FORMAT:
        return load_probe(folder)
    if "_model_class" not in config:
        raise WeightsError(
            f"{folder / CONFIG_NAME}: neither an smp model (no _model_class) nor a probe (format {PROBE_FORMAT!r})"
        )
    if not (folder / PREPROCESSING_NAME).is_file():
        raise WeightsError(
            f"{folder}: no {PREPROCESSING_NAME}; the HU window and image size the model was trained with are "
            f"unknown (write it with smp_diffusion_encoder.formats.save_segmenter)"
        )
    try:
        prep = PreprocessingConfig.from_dict(read_config(folder / PREPROCESSING_NAME))
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
    """Record what ``predict`` does after the model in ``out_dir/postprocessing.json`` (either kind)."""
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
        return PostprocessingConfig.from_dict(read_config(path))
    except (TypeError, ConfigError) as err:
        raise WeightsError(f"{path}: {err}") from err


def _check_probe_config(config: dict[str, Any], source: str) -> None:
    if config.get("format") != PROBE_FORMAT:
        raise WeightsError(f"{source}/{CONFIG_NAME}: not a probe config (format {config.get('format')!r})")
    if config.get("format_version") != PROBE_FORMAT_VERSION:
        raise WeightsError(f"{source}/{CONFIG_NAME}: unsupported probe format_version {config.get('format_version')!r}")


__all__ = [
    "POSTPROCESSING_NAME",
    "PREPROCESSING_NAME",
    "PROBE_FORMAT",
    "PROBE_FORMAT_VERSION",
    "Segmenter",
    "load_finetuned",
    "load_model",
    "load_probe",
    "read_postprocessing",
    "save_finetuned",
    "save_probe",
    "save_segmenter",
    "write_postprocessing",
]
