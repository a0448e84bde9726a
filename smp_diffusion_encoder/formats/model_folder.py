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

3. **An ensemble** of several such folders trained on the same labeled slices, written by :func:`save_ensemble`:
   ``config.json`` = ``{"format": "smp-diffusion-ensemble", "format_version": 1, "members": ["member0", ...]}``,
   each member a complete folder of kind 1 or 2 inside it, ``preprocessing.json`` (every member's, which must
   agree) and ``postprocessing.json`` beside them. It predicts with the mean of its members' probabilities
   (:class:`~smp_diffusion_encoder.heads.ModelEnsemble`).

Every kind may hold ``postprocessing.json`` (:class:`~smp_diffusion_encoder.data.postprocess.PostprocessingConfig`:
what ``predict`` does after the model), written by :func:`write_postprocessing`; folders written before it
existed get none.

All load as a :class:`Segmenter` (:func:`load_model`): ``(B, 1, S, S)`` slices in [-1, 1] -> logits
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
from collections.abc import Sequence
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
from smp_diffusion_encoder.heads.model_ensemble import ModelEnsemble
from smp_diffusion_encoder.heads.probe_model import ProbeModel
from smp_diffusion_encoder.models.config import resolve_config

PREPROCESSING_NAME = "preprocessing.json"
POSTPROCESSING_NAME = "postprocessing.json"
PROBE_FORMAT = "smp-diffusion-probe"
PROBE_FORMAT_VERSION = 1
ENSEMBLE_FORMAT = "smp-diffusion-ensemble"
ENSEMBLE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Segmenter:
    """A loaded model folder: ``module`` maps ``(B, 1, S, S)`` -> ``(B, num_classes, S, S)`` logits.

    (Not to be confused with smp's ``SegmentationModel`` base class: this is the module plus what
    inference needs to feed it: its preprocessing, class count and origin.)"""

    module: nn.Module
    preprocessing: PreprocessingConfig
    num_classes: int
    kind: Literal["smp", "probe", "ensemble"]
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


def save_ensemble(member_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]) -> Path:
    """Write an ensemble folder (kind 3 above) from at least two model folders: each is copied in as
    ``member<k>``, their ``preprocessing.json`` (checked equal: they must read slices the same way) and the first
    member's ``postprocessing.json`` are written beside them, ``config.json`` last (a folder with it is complete).

    Raises:
        WeightsError: fewer than two members, a member that does not load, or members that disagree on
            preprocessing or class count.
    """
    if len(member_dirs) < 2:
        raise WeightsError(f"an ensemble needs at least 2 model folders, got {len(member_dirs)}")
    loaded = [load_model(d) for d in member_dirs]
    _check_members(loaded, Path(out_dir))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for k, member in enumerate(loaded):
        name = f"member{k}"
        tmp = make_temp_dir(f".{name}.tmp-", out)
        try:
            shutil.copytree(member.source, tmp, dirs_exist_ok=True)
            if (out / name).exists():
                shutil.rmtree(out / name)
            os.replace(tmp, out / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        names.append(name)
    for stale in out.glob("member*"):  # an earlier ensemble's members that are not this one's
        if stale.is_dir() and stale.name not in names:
            shutil.rmtree(stale)
    atomic_write_json(out / PREPROCESSING_NAME, loaded[0].preprocessing.to_dict())
    write_postprocessing(out, loaded[0].postprocessing)
    atomic_write_json(
        out / CONFIG_NAME, {"format": ENSEMBLE_FORMAT, "format_version": ENSEMBLE_FORMAT_VERSION, "members": names}
    )
    return out


def load_ensemble(model_dir: str | os.PathLike[str]) -> Segmenter:
    """An ensemble folder (kind 3) as one :class:`Segmenter`: its members loaded with :func:`load_model`, the
    folder's own post-processing. Errors are :class:`WeightsError`, naming the file."""
    folder = Path(model_dir)
    config = read_config(folder / CONFIG_NAME)
    where = folder / CONFIG_NAME
    if config.get("format_version") != ENSEMBLE_FORMAT_VERSION:
        raise WeightsError(f"{where}: unsupported ensemble format_version {config.get('format_version')!r}")
    names = config.get("members")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise WeightsError(f"{where}: 'members' must list at least 2 member folder names, got {names!r}")
    for name in names:
        if Path(name).name != name or name in (".", ".."):
            raise WeightsError(f"{where}: member {name!r} is not a folder name inside the ensemble folder")
    if len(set(names)) != len(names):
        raise WeightsError(f"{where}: a member is listed twice ({names})")
    members = []
    for name in names:
        if not (folder / name).is_dir():
            raise WeightsError(f"{where}: member folder {folder / name} is missing")
        member = load_model(folder / name)
        if member.kind == "ensemble":
            raise WeightsError(f"{folder / name}: an ensemble cannot be a member of an ensemble")
        members.append(member)
    _check_members(members, folder)
    try:
        prep = PreprocessingConfig.from_dict(read_config(folder / PREPROCESSING_NAME))
    except (FileNotFoundError, ConfigError) as err:
        raise WeightsError(f"{folder / PREPROCESSING_NAME}: {err}") from err
    if prep != members[0].preprocessing:
        raise WeightsError(f"{folder / PREPROCESSING_NAME}: differs from the members' preprocessing")
    module = ModelEnsemble([m.module for m in members]).eval()
    return Segmenter(module, prep, members[0].num_classes, "ensemble", folder, read_postprocessing(folder))


def _check_members(members: Sequence[Segmenter], where: Path) -> None:
    first = members[0]
    for m in members[1:]:
        if m.preprocessing != first.preprocessing:
            raise WeightsError(
                f"{where}: members read slices differently ({first.source}: {first.preprocessing.to_dict()}, "
                f"{m.source}: {m.preprocessing.to_dict()})"
            )
        if m.num_classes != first.num_classes:
            raise WeightsError(
                f"{where}: members predict different class counts ({first.num_classes} vs {m.num_classes})"
            )


def load_model(model_dir: str | os.PathLike[str]) -> Segmenter:
    """Load any kind from a local folder (eval mode, CPU); errors are :class:`WeightsError`."""
    folder = Path(model_dir)
    if not (folder / CONFIG_NAME).is_file():
        raise WeightsError(f"{folder}: not a model folder (no {CONFIG_NAME})")
    config = read_config(folder / CONFIG_NAME)
    if config.get("format") == PROBE_FORMAT:
        return load_probe(folder)
    if config.get("format") == ENSEMBLE_FORMAT:
        return load_ensemble(folder)
    if "_model_class" not in config:
        raise WeightsError(
            f"{folder / CONFIG_NAME}: neither an smp model (no _model_class) nor a probe or an ensemble "
            f"(format {PROBE_FORMAT!r} or {ENSEMBLE_FORMAT!r})"
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
    "ENSEMBLE_FORMAT",
    "ENSEMBLE_FORMAT_VERSION",
    "POSTPROCESSING_NAME",
    "PREPROCESSING_NAME",
    "PROBE_FORMAT",
    "PROBE_FORMAT_VERSION",
    "Segmenter",
    "load_ensemble",
    "load_finetuned",
    "load_model",
    "load_probe",
    "read_postprocessing",
    "save_ensemble",
    "save_finetuned",
    "save_probe",
    "save_segmenter",
    "write_postprocessing",
]
