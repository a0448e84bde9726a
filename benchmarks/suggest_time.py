"""How long ``smp-diffusion suggest`` takes on CPU: ``--scans`` scans of ``--slices`` axial slices each.

The scans are copies of one CT volume (``--source``; default the shipped demo scan), each cut to ``--slices``
slices and saved under its own name; the model is the library's default (an smp Unet decoder on the frozen
``ddpm-ct`` encoder with its shipped weights; the decoder's weights do not change the time, so it is saved
untrained). The command runs in this process exactly as a user runs it (reading the scans, scoring every slice,
ranking, writing the CSV, JSON, contact sheet and sidecars), once per ``--measures``; the table gives the wall
time, the process's CPU time (user + system: on a busy machine the wall time includes waiting for a core) and
the threads torch used.

    python benchmarks/suggest_time.py --source ../shared/data/realct_extra/unlabeled/REALCT_Un_0005_0000.nii.gz
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nibabel as nib
import numpy as np

import smp_diffusion_encoder
from benchmarks._machine import RESULTS, append_result, describe_machine, today
from smp_diffusion_encoder.data.volume import read_volume

DEMO = Path(smp_diffusion_encoder.__file__).parent / "demo_data" / "train" / "REALCT_Tr_0001" / "image.nii.gz"


def make_scans(source: Path, folder: Path, n_scans: int, n_slices: int) -> list[Path]:
    """``n_scans`` NIfTI copies of ``source``'s first ``n_slices`` slices (a shorter source repeats along z), int16
    HU, written in the canonical voxel order with the canonical affine."""
    volume = read_volume(source)
    part = volume.array[[i % volume.array.shape[0] for i in range(n_slices)]]
    data = np.ascontiguousarray(np.rint(part).astype(np.int16).transpose(2, 1, 0))  # (Z, Y, X) -> (x, y, z)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_scans):
        path = folder / f"SCAN_{i + 1:04d}.nii.gz"
        nib.save(nib.Nifti1Image(data, volume.canonical_affine), path)
        paths.append(path)
    return paths


def make_model(folder: Path, encoder: str, weights: str | None) -> Path:
    import segmentation_models_pytorch as smp

    from smp_diffusion_encoder.data.remap import FLARE_NUM_CLASSES
    from smp_diffusion_encoder.finetune.config import FinetuneConfig
    from smp_diffusion_encoder.inference import save_segmenter
    from smp_diffusion_encoder.registry.weights import preprocessing_for, resolve_weights

    config = FinetuneConfig(encoder=encoder, encoder_weights=weights)
    resolved = resolve_weights(config.encoder, config.encoder_weights)
    model = smp.create_model(
        config.architecture, encoder_name=encoder, encoder_weights=resolved, in_channels=1, classes=FLARE_NUM_CLASSES
    )
    return save_segmenter(model, folder / "model", preprocessing_for(encoder, resolved))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=Path, default=DEMO, help="CT volume the scans are copied from")
    p.add_argument("--scans", type=int, default=5)
    p.add_argument("--slices", type=int, default=100)
    p.add_argument("--measures", nargs="+", default=["error", "tta"])
    p.add_argument("--encoder", default="ddpm-ct")
    p.add_argument("--encoder-weights", default="auto")
    p.add_argument("--out", type=Path, default=RESULTS / "suggest_time.md", help="results file to append to")
    p.add_argument("--no-record", action="store_true", help="print only (tests)")
    args = p.parse_args(argv)

    import torch

    from smp_diffusion_encoder.cli.main import main as cli

    weights = None if args.encoder_weights.lower() == "none" else args.encoder_weights
    rows = []
    with tempfile.TemporaryDirectory(prefix="suggest-time-") as tmp:
        work = Path(tmp)
        scans = make_scans(args.source, work / "scans", args.scans, args.slices)
        model = make_model(work, args.encoder, weights)
        for measure in args.measures:
            before = resource.getrusage(resource.RUSAGE_SELF)
            tick = time.perf_counter()
            code = cli(
                [
                    "suggest",
                    str(work / "scans"),
                    "--model",
                    str(model),
                    "--out",
                    str(work / measure),
                    "--n",
                    "8",
                    "--measure",
                    measure,
                    "--device",
                    "cpu",
                    "--no-progress",
                ]
            )
            wall = time.perf_counter() - tick
            after = resource.getrusage(resource.RUSAGE_SELF)
            if code:
                raise SystemExit(f"suggest failed with status {code}")
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            rows.append(
                f"| `{measure}` | {len(scans)} x {args.slices} | {wall:.1f} s | {cpu:.1f} s | "
                f"{torch.get_num_threads()} |"
            )
    text = f"""
## {today()}

- Machine: {describe_machine("cpu")}; load average at start {os.getloadavg()[0]:.1f}
- Scans: {args.scans} copies of `{args.source.name}` cut to {args.slices} slices; model: smp Unet on `{args.encoder}`
  (weights {args.encoder_weights}); `smp-diffusion suggest SCANS --n 8 --measure M --device cpu` in-process,
  everything included (reading, scoring every slice, ranking, CSV/JSON/contact sheet/sidecars).
- Command: `python benchmarks/suggest_time.py {" ".join(argv if argv is not None else sys.argv[1:])}`

| measure | scans x slices | wall time | CPU time (user + system) | torch threads |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}
"""
    print(text)
    if not args.no_record:
        append_result(args.out, "Time of smp-diffusion suggest on CPU", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
