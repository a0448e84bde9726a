"""Peak memory of ``smp-diffusion predict`` per input voxel, with and without ``--save-probabilities``.

One synthetic CT volume (``--shape`` Z Y X voxels, int16 NIfTI: an air-filled field with an elliptic soft-tissue
body) is predicted by an smp Unet on ``--encoder`` (random weights: memory does not depend on them) through
:func:`~smp_diffusion_encoder.inference.predict_files`, everything included (reading, preprocessing, the model,
mapping back, writing the files), three ways, each in a fresh subprocess:

* ``labels``: the label map only;
* ``probabilities``: ``--save-probabilities`` as it is now (float16 maps filled batch by batch, written as uint8);
* ``reference``: ``--save-probabilities`` as it was before (float32 maps, written as float32), measured in the
  same run by switching the map's dtype and writer back (``_PROBABILITY_DTYPE``, ``write_volume_like``).

Each subprocess loads the model, then writes "5" to ``/proc/self/clear_refs`` (resets the peak RSS to the current
RSS) and reports ``VmHWM`` (peak RSS) minus the RSS at that point, divided by the input's voxel count: the bytes
per input voxel that predicting this volume needs (as benchmarks/probe_memory.py measures memory).

    python -m benchmarks.probability_memory                     # 512 x 512 x 24, writes results/probability_memory.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._machine import RESULTS, ROOT, append_result, describe_machine, today

MODES = ("labels", "probabilities", "reference")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def make_volume(path: Path, shape: tuple[int, int, int]) -> Path:
    """An int16 CT NIfTI of ``shape`` (Z, Y, X) at 0.8 x 0.8 x 2 mm: air with an elliptic soft-tissue body."""
    import nibabel as nib

    z, y, x = shape
    rng = np.random.default_rng(0)
    ii, jj = np.meshgrid(np.linspace(-1, 1, x), np.linspace(-1, 1, y), indexing="ij")
    body = np.where((ii**2 / 0.7 + jj**2 / 0.5) < 1, 40, -1000).astype(np.int16)
    data = np.repeat(body[:, :, None], z, axis=2) + rng.integers(-20, 20, (x, y, z), dtype=np.int16)
    nib.save(nib.Nifti1Image(data.astype(np.int16), np.diag([-0.8, -0.8, 2.0, 1.0])), path)
    return path


def make_model(folder: Path, encoder: str) -> Path:
    import segmentation_models_pytorch as smp

    import smp_diffusion_encoder  # noqa: F401  (registers the encoders)
    from smp_diffusion_encoder.data.remap import FLARE_NUM_CLASSES
    from smp_diffusion_encoder.inference import save_segmenter
    from smp_diffusion_encoder.registry.weights import preprocessing_for

    model = smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=1, classes=FLARE_NUM_CLASSES)
    return save_segmenter(model, folder / "model", preprocessing_for(encoder, None))


def child(mode: str, volume: Path, model_dir: Path, out: Path, batch_size: int) -> dict:
    """Predict ``volume`` in ``mode``; return the peak RSS growth (bytes) and the voxel count."""
    import nibabel as nib
    import torch

    import smp_diffusion_encoder.inference.volume as inference
    from smp_diffusion_encoder.data.volume import write_volume_like
    from smp_diffusion_encoder.inference import load_model, predict_files

    torch.set_num_threads(1)
    model = load_model(model_dir)
    if mode == "reference":  # the code before the change: float32 maps, written as float32
        inference._PROBABILITY_DTYPE = np.float32
        inference.write_probabilities_like = write_volume_like
    voxels = int(np.prod(nib.load(volume).shape))
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kib("VmRSS")
    predict_files(
        [volume],
        model,
        out,
        batch_size=batch_size,
        device="cpu",
        precision="fp32",
        progress=False,
        save_probabilities=mode != "labels",
    )
    peak = (_status_kib("VmHWM") - base) * 1024
    return {
        "mode": mode,
        "peak_bytes": peak,
        "voxels": voxels,
        "bytes_per_voxel": peak / voxels,
        "files": {p.name: p.stat().st_size for p in sorted(out.iterdir())},
    }


def measure(mode: str, volume: Path, model_dir: Path, out: Path, batch_size: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.probability_memory",
        "--child",
        mode,
        "--volume",
        str(volume),
        "--model",
        str(model_dir),
        "--child-out",
        str(out),
        "--batch-size",
        str(batch_size),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=ROOT)
    if run.returncode:
        raise SystemExit(f"{mode} failed with status {run.returncode}:\n{run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=3, default=(24, 512, 512), metavar=("Z", "Y", "X"))
    p.add_argument("--encoder", default="ddpm-ct-tiny")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", type=Path, default=RESULTS / "probability_memory.md", help="results file to append to")
    p.add_argument("--no-record", action="store_true", help="print only (tests)")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--volume", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.volume, args.model, args.child_out, args.batch_size)))
        return 0

    with tempfile.TemporaryDirectory(prefix="probability-memory-") as tmp:
        work = Path(tmp)
        volume = make_volume(work / "CASE_0000.nii.gz", tuple(args.shape))
        model_dir = make_model(work, args.encoder)
        results = {m: measure(m, volume, model_dir, work / m, args.batch_size) for m in MODES}
    ref = results["reference"]["bytes_per_voxel"]
    rows = []
    for mode in MODES:
        r = results[mode]
        size = sum(r["files"].values()) / r["voxels"]
        rows.append(
            f"| {mode} | {r['peak_bytes'] / 2**20:.0f} MiB | {r['bytes_per_voxel']:.1f} | "
            f"{r['bytes_per_voxel'] / ref:.2f} | {size:.2f} |"
        )
    z, y, x = args.shape
    text = f"""
## {today()}

- Machine: {describe_machine("cpu")}; load average at start {os.getloadavg()[0]:.1f}
- Volume: synthetic int16 NIfTI, {x} x {y} x {z} voxels; model: smp Unet on `{args.encoder}` (random weights,
  14 classes); `predict_files(..., batch_size={args.batch_size}, device="cpu")` in a fresh subprocess per row;
  peak RSS growth (VmHWM after clear_refs, after the model is loaded) per input voxel.
- reference: the same command with the code before the change (float32 maps written as float32), same run.
- Command: `python -m benchmarks.probability_memory {" ".join(argv if argv is not None else sys.argv[1:])}`

| predict | peak RSS growth | bytes per input voxel | vs reference | output bytes per voxel |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}
"""
    print(text)
    if not args.no_record:
        append_result(args.out, "Peak memory of smp-diffusion predict per input voxel", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
