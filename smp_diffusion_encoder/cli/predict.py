"""``smp-diffusion predict INPUT --model MODEL_DIR --out OUT_DIR``: segment CT volumes.

INPUT is a NIfTI, NRRD or MetaImage file (.nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd), a DICOM series folder,
or a folder of them (searched recursively; a case folder, CASE/label.nii.gz beside its image, gives its image,
and its outputs are named CASE). MODEL_DIR is a whole smp model saved with
``smp_diffusion_encoder.formats.save_segmenter`` (config.json, model.safetensors, preprocessing.json) or a
linear probe saved with ``formats.save_probe``. Each input gives OUT_DIR/<case>.nii.gz (uint8 label ids) with exactly
the input's geometry, and optionally <case>_probabilities.nii.gz (uint8 round(p * 255) with scl_slope 1/255:
readers get probabilities in [0, 1]; classes on the last axis; about 50 bytes of memory per input voxel) and
<case>_uncertainty.nii.gz (softmax entropy, nats). --output-format nrrd or mha writes those files as .nrrd or
.mha; dicom-seg (DICOM series inputs only) writes <case>_seg.dcm, a DICOM Segmentation object that references
the source CT slices (one segment per FLARE organ found), for PACS, 3D Slicer and OHIF; seg-nrrd writes
<case>.seg.nrrd, a 3D Slicer segmentation (one named, coloured segment per organ; maps as .nrrd); rtstruct
(DICOM series inputs only; needs rt-utils: pip install 'smp_diffusion_encoder[rtstruct]') writes
<case>_rtstruct.dcm, a DICOM RT Structure Set referencing the source series (one contoured ROI per organ), for
radiotherapy planning systems. Files are written
atomically, with the permissions of the user's umask. The first bad input stops the run with exit status 2
(earlier cases' outputs are complete; the bad one gets none); --keep-going predicts every good input,
then lists the bad ones and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from smp_diffusion_encoder._options import DEVICE_HELP, PRECISIONS, parse_device
from smp_diffusion_encoder.cli._args import description
from smp_diffusion_encoder.data.io_registry import output_formats


def register(subparsers: Any) -> None:
    """Add the ``predict`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    p = subparsers.add_parser(
        "predict",
        help="segment NIfTI/DICOM CT volumes with a saved model; label maps keep the input's geometry",
        description=description(__doc__),
    )
    p.add_argument("input", type=Path, metavar="INPUT", help="NIfTI file, DICOM series folder, or folder of them")
    p.add_argument("--model", type=Path, required=True, metavar="MODEL_DIR", help="saved model folder")
    p.add_argument("--out", type=Path, required=True, metavar="OUT_DIR", help="folder for the predictions")
    p.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default 8)")
    p.add_argument("--device", type=parse_device, default="auto", help=f"{DEVICE_HELP} (default: auto)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: bfloat16 autocast where the device computes bf16 natively (CUDA; CPUs with "
        "AVX512-BF16 or AMX), else fp32 (default: auto)",
    )
    p.add_argument(
        "--output-format",
        default="nifti",
        choices=output_formats(),
        help="format of the label maps (default nifti); dicom-seg and rtstruct need DICOM series inputs and "
        "write probabilities/uncertainty as NIfTI, seg-nrrd (3D Slicer) writes them as NRRD",
    )
    p.add_argument("--save-probabilities", action="store_true", help="also write <case>_probabilities.nii.gz")
    p.add_argument("--save-uncertainty", action="store_true", help="also write <case>_uncertainty.nii.gz")
    p.add_argument("--keep-going", action="store_true", help="predict all good inputs, then report the bad ones")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.inference import load_model, predict_files, resolve_inputs

    inputs = resolve_inputs(args.input)
    model = load_model(args.model)
    report = predict_files(
        inputs,
        model,
        args.out,
        batch_size=args.batch_size,
        device=args.device,
        save_probabilities=args.save_probabilities,
        save_uncertainty=args.save_uncertainty,
        keep_going=args.keep_going,
        progress=not args.no_progress,
        output_format=args.output_format,
        precision=args.precision,
    )
    for case, paths in report.written.items():
        print(f"{case}: " + ", ".join(str(p) for p in paths))
    for _path, message in report.failed:
        print(f"error: {message}", file=sys.stderr)
    if report.failed:
        print(f"{len(report.failed)} of {len(inputs)} inputs failed", file=sys.stderr)
        return 2
    return 0
