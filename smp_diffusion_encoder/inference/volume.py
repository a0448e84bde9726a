"""Whole-volume inference: CT files in, label maps with the input's exact geometry out.

Pipeline per input (NIfTI file or DICOM series folder): :func:`~smp_diffusion_encoder.data.volume.read_volume`
(canonical ``(Z, Y, X)`` HU) -> the model's :class:`~smp_diffusion_encoder.data.preprocessing.PreprocessingConfig`
and its :class:`~smp_diffusion_encoder.data.preprocessing.SliceGeometry` (``(Z, S, S)`` in [-1, 1]) -> slices in
batches through the model -> softmax -> each batch's probabilities mapped back onto the input's grid by the
geometry's inverse (outside the model's window: background) -> argmax. Labels are taken from the
probabilities at the input's resolution (smoother organ boundaries than upsampling labels), batch by
batch, so memory stays at one batch of full-resolution probabilities unless they are saved; saved ones are
kept as float16 (2 bytes per voxel and class, allocated once and filled batch by batch) and written as uint8
(:func:`~smp_diffusion_encoder.data.volume.write_probabilities_like`).

Outputs in ``out_dir`` for case ``<case>`` (the file name without its ending (``.nii.gz``, ``.nrrd``...)
and without FLARE's ``_0000`` channel suffix; a DICOM folder's name), in ``output_format``, one of the table
of formats (:data:`~smp_diffusion_encoder.data.io_registry.OUTPUT_FORMATS`):

* ``"nifti"`` (default): ``<case>.nii.gz`` (uint8 ids), optionally ``<case>_probabilities.nii.gz`` (uint8
  ``round(p * 255)`` with ``scl_slope = 1/255``, so readers get probabilities in [0, 1]; 4D with the class
  axis last) and ``<case>_uncertainty.nii.gz`` (float32, entropy of the softmax in nats,
  0 = certain, at most ``log K``);
* ``"nrrd"`` / ``"mha"``: the same files as ``.nrrd`` / ``.mha`` (probabilities as a uint8 vector image of
  0..255: these formats have no scale field);
* ``"dicom-seg"`` (DICOM series inputs only): ``<case>_seg.dcm``, a DICOM Segmentation object referencing
  the source series (:class:`~smp_diffusion_encoder.data.dicom_seg.DicomSegIO`); probabilities and
  uncertainty, if asked for, as NIfTI. A prediction without any organ gets no SEG (it needs at least one
  segment): a warning says so.

Every file has exactly the input's grid (NIfTI: shape, voxel order, affine and qform/sform), and is written
atomically; the label map is written last, and if any of a case's files fails, the ones already written
for it are removed.

Errors: by default the first bad input stops the run (earlier cases' outputs are complete and stay;
the bad one gets no file). ``keep_going=True`` predicts every good input and reports the bad ones.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from smp_diffusion_encoder._device import Precision, autocast, resolve_device, resolve_precision
from smp_diffusion_encoder._io import check_name_fits
from smp_diffusion_encoder.data.dicom import is_dicom_folder
from smp_diffusion_encoder.data.flare import CASE_IMAGE_NAMES, CASE_LABEL_NAMES, find_cases
from smp_diffusion_encoder.data.imageio import LabelInfo, VolumeIO
from smp_diffusion_encoder.data.io_registry import is_volume_file, output_writer, strip_volume_suffix
from smp_diffusion_encoder.data.preprocessing import SliceGeometry
from smp_diffusion_encoder.data.volume import Volume, read_volume, write_probabilities_like
from smp_diffusion_encoder.errors import ConfigError, InputFileError, SmpDiffusionError
from smp_diffusion_encoder.formats.model_folder import Segmenter
from smp_diffusion_encoder.inference.postprocess import PostprocessingConfig, keep_largest_components, smooth_along_z

#: An ``--output-format`` name: one of :data:`OUTPUT_FORMATS` (from the table of formats).
OutputFormat = str

#: In-memory dtype of saved probabilities (2 bytes per voxel and class; float32 took 4).
_PROBABILITY_DTYPE = np.float16


@dataclass(frozen=True)
class VolumePrediction:
    """Predictions for one volume, canonical ``(Z, Y, X)`` like ``Volume.array``.

    Attributes:
        labels: ``(Z, Y, X)`` uint8 class ids.
        probabilities: ``(K, Z, Y, X)`` float16 softmax (rounding error below 0.0005), or ``None`` if not
            requested.
        uncertainty: ``(Z, Y, X)`` float32 softmax entropy (nats), or ``None`` if not requested.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    uncertainty: np.ndarray | None = None


@dataclass
class PredictReport:
    """What :func:`predict_files` did: files written per case, and ``(input, message)`` per failure."""

    written: dict[str, list[Path]] = field(default_factory=dict)
    failed: list[tuple[Path, str]] = field(default_factory=list)


@torch.inference_mode()
def predict_volume(
    model: Segmenter,
    volume: Volume,
    *,
    batch_size: int = 8,
    device: str | torch.device = "auto",
    probabilities: bool = False,
    uncertainty: bool = False,
    progress: bool = False,
    slices: Sequence[int] | None = None,
    precision: Precision = "auto",
    postprocessing: PostprocessingConfig | None = None,
) -> VolumePrediction:
    """Segment one canonical image volume (HU) with ``model``; see the module docstring for the steps.

    ``slices``: only these z indices (the in-plane layout is still the whole volume's); the returned maps
    then hold those slices only, in the given order, ``(len(slices), Y, X)``. With post-processing that looks
    at other slices, the whole volume is predicted and these slices returned. ``precision``: ``"auto"``
    (bf16 autocast where the device has native bf16, see :mod:`smp_diffusion_encoder._device`), ``"fp32"``
    or ``"bf16"``; the model's parameters are moved to the channels-last layout (faster convolutions on CPUs).
    ``postprocessing``: instead of the model folder's own (:mod:`~smp_diffusion_encoder.inference.postprocess`).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    post = model.postprocessing if postprocessing is None else postprocessing
    if slices is not None and post.needs_volume:
        whole = predict_volume(
            model,
            volume,
            batch_size=batch_size,
            device=device,
            probabilities=probabilities,
            uncertainty=uncertainty,
            progress=progress,
            precision=precision,
            postprocessing=post,
        )
        index = np.asarray(slices, dtype=np.int64)
        return VolumePrediction(
            whole.labels[index],
            None if whole.probabilities is None else whole.probabilities[:, index],
            None if whole.uncertainty is None else whole.uncertainty[index],
        )
    dev = resolve_device(str(device))
    precision = resolve_precision(precision, dev)
    module = model.module.to(dev, memory_format=torch.channels_last).eval()
    geometry = SliceGeometry.of(volume, model.preprocessing)
    if slices is None:
        chosen = volume
    else:
        chosen = dataclasses.replace(volume, array=volume.array[np.asarray(slices, dtype=np.int64)])
    model_slices = geometry.image_slices(chosen, model.preprocessing)  # (Z, S, S)
    z, h, w = chosen.array.shape
    labels = np.empty((z, h, w), dtype=np.uint8)
    probs_out = np.empty((model.num_classes, z, h, w), dtype=_PROBABILITY_DTYPE) if probabilities else None
    unc_out = np.empty((z, h, w), dtype=np.float32) if uncertainty else None

    def model_probabilities(start: int) -> np.ndarray:
        x = torch.from_numpy(model_slices[start : start + batch_size]).unsqueeze(1).to(dev)
        with autocast(dev, precision):
            logits = module(x.contiguous(memory_format=torch.channels_last))
        if logits.shape[1] != model.num_classes:
            raise ConfigError(
                f"{model.source}: model gives {logits.shape[1]} classes, its config says {model.num_classes}"
            )
        return logits.float().softmax(dim=1).cpu().numpy()  # (b, K, S, S)

    starts = range(0, z, batch_size)
    bar = tqdm(starts, desc=volume.name, unit="batch", disable=not progress, file=sys.stderr)
    if post.z_context_mm > 0:  # every slice's probabilities first: a slice needs its neighbours'
        smoothed = smooth_along_z(
            np.concatenate([model_probabilities(s) for s in bar]),
            float(volume.spacing[0]),
            post.z_context_mm,
            post.z_context_weight,
        )
        batches = ((s, smoothed[s : s + batch_size]) for s in starts)
    else:
        batches = ((s, model_probabilities(s)) for s in bar)
    for start, p in batches:
        b = p.shape[0]
        full = geometry.probabilities_to_volume(p)  # (b, K, Y, X)
        labels[start : start + b] = full.argmax(axis=1)
        if probs_out is not None:
            probs_out[:, start : start + b] = full.transpose(1, 0, 2, 3)
        if unc_out is not None:
            q = np.clip(full, 1e-12, 1.0)
            unc_out[start : start + b] = np.maximum(-(q * np.log(q)).sum(axis=1), 0.0)
    if post.largest_component:
        labels = keep_largest_components(labels)
    return VolumePrediction(labels, probs_out, unc_out)


def case_name(path: str | os.PathLike[str]) -> str:
    """Output name of an input: ``FLARE22_Tr_0001_0000.nii.gz`` (or ``.nrrd``, ``.mha``...) ->
    ``FLARE22_Tr_0001``; a DICOM folder's name; the image of a case folder (``CASE/image.nii.gz``, or
    ``CASE/dicom/`` beside ``CASE/label.nii.gz``: :func:`~smp_diffusion_encoder.data.flare.find_labeled_cases`)
    -> the case folder's name, so ``evaluate`` pairs the prediction with ``CASE/label.nii.gz``."""
    path = Path(path)
    in_case_folder = any((path.parent / n).is_file() for n in CASE_LABEL_NAMES)
    if path.name in CASE_IMAGE_NAMES or (in_case_folder and path.is_dir()):
        return path.resolve().parent.name
    if not is_volume_file(path):
        return path.name
    name = strip_volume_suffix(path.name)
    return name[: -len("_0000")] if name.endswith("_0000") else name


def resolve_inputs(path: str | os.PathLike[str]) -> list[Path]:
    """A volume file, a DICOM series folder, or a folder of them (recursive) -> the volumes to predict. Case
    folders (:func:`~smp_diffusion_encoder.data.flare.find_cases`) give their image, never their label map."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "does not exist")
    if path.is_file() or is_dicom_folder(path):
        return [path]
    return [case.image for case in find_cases(path)]


def predict_files(
    inputs: Sequence[Path],
    model: Segmenter,
    out_dir: str | os.PathLike[str],
    *,
    batch_size: int = 8,
    device: str = "auto",
    save_probabilities: bool = False,
    save_uncertainty: bool = False,
    keep_going: bool = False,
    progress: bool = True,
    output_format: OutputFormat = "nifti",
    precision: Precision = "auto",
) -> PredictReport:
    """Predict every input and write its files to ``out_dir`` in ``output_format`` (see the module docstring).

    Raises the first :class:`SmpDiffusionError` unless ``keep_going``. Refused before anything is written
    (:class:`ConfigError`): two inputs with the same case name, an unknown ``output_format``, and inputs or a
    model the format cannot serve (e.g. ``"dicom-seg"`` for an input that is not a DICOM series folder);
    (:class:`InputFileError`, naming the input) an output file name longer than ``out_dir``'s file system allows.
    """
    writer = output_writer(output_format)
    names = [case_name(p) for p in inputs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        clash = [str(p) for p, n in zip(inputs, names) if n == dupes[0]]
        raise ConfigError(
            f"inputs {clash} would all be written as {dupes[0]}{writer.label_ending}; predict them separately"
        )
    writer.check_outputs(inputs, model.num_classes)
    resolve_precision(precision, resolve_device(device))  # a bad device or precision fails before any input
    out = Path(out_dir)
    for path, name in zip(inputs, names):  # a name the file system refuses fails before any model runs
        for file in _output_files(out, name, output_format, save_probabilities, save_uncertainty):
            check_name_fits(file, source=path)
    report = PredictReport()
    for path, name in zip(inputs, names):
        try:
            volume = read_volume(path)
            pred = predict_volume(
                model,
                volume,
                batch_size=batch_size,
                device=device,
                probabilities=save_probabilities,
                uncertainty=save_uncertainty,
                progress=progress,
                precision=precision,
            )
            report.written[name] = _write_case(pred, volume, out, name, output_format, model.source.name)
        except SmpDiffusionError as err:
            if not keep_going:
                raise
            report.failed.append((Path(path), f"{type(err).__name__}: {err}"))
    return report


def _case_outputs(out: Path, name: str, output_format: str) -> tuple[VolumeIO, VolumeIO, dict[str, Path]]:
    """The label-map writer, the writer of float maps, and the paths of case ``name``'s files."""
    writer = output_writer(output_format)
    maps = output_writer(writer.map_format) if writer.map_format else writer
    paths = {
        "labels": out / f"{name}{writer.label_ending}",
        "probabilities": out / f"{name}_probabilities{maps.label_ending}",
        "uncertainty": out / f"{name}_uncertainty{maps.label_ending}",
    }
    return writer, maps, paths


def _output_files(out: Path, name: str, output_format: str, probabilities: bool, uncertainty: bool) -> list[Path]:
    """The files :func:`_write_case` may write for case ``name``."""
    _, _, paths = _case_outputs(out, name, output_format)
    wanted = {"labels": True, "probabilities": probabilities, "uncertainty": uncertainty}
    return [path for kind, path in paths.items() if wanted[kind]]


def _write_case(
    pred: VolumePrediction, volume: Volume, out: Path, name: str, output_format: str = "nifti", model_name: str = ""
) -> list[Path]:
    """Extras first, label map last; on failure remove this case's files already written."""
    writer, maps, paths = _case_outputs(out, name, output_format)
    written: list[Path] = []
    try:
        if pred.probabilities is not None:
            written.append(write_probabilities_like(pred.probabilities, volume, paths["probabilities"]))
        if pred.uncertainty is not None:
            written.append(maps.write_map(pred.uncertainty, volume, paths["uncertainty"]))
        info = LabelInfo.flare(f"smp_diffusion_encoder {model_name}".strip())
        labels = writer.write_labels(pred.labels, volume, paths["labels"], info)
        written += [labels] if labels is not None else []
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written
