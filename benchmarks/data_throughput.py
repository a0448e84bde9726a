"""Data pipeline throughput: slice-store preparation (1 vs 2 workers) and DataLoader reads (store vs NIfTI).

Usage: ``.venv/bin/python benchmarks/data_throughput.py [--phantoms 6] [--image-size 256]``

Volumes: ``--phantoms`` procedural phantoms (48x192x192) plus, when present, the 4 unlabeled real CT volumes
of ``../shared/data/realct`` (or ``$SMP_DIFFUSION_REALCT``). Every number is measured in the same run, so
the ratios hold even on a busy machine. Writes ``benchmarks/results/data_throughput.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from smp_diffusion_encoder.data.flare import FlareDataset
from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig, volume_to_model_slices
from smp_diffusion_encoder.data.slice_store import SliceStore, build_slice_store
from smp_diffusion_encoder.data.volume import read_volume

REALCT = Path(os.environ.get("SMP_DIFFUSION_REALCT", Path(__file__).resolve().parents[1].parent / "shared/data/realct"))


class NiftiSlices(Dataset):
    """Reference reader: each item re-reads its NIfTI and preprocesses the whole volume (no store)."""

    def __init__(self, store: SliceStore) -> None:
        self.store, self.cfg = store, store.config

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> torch.Tensor:
        source, z = self.store.locate(i)
        return torch.from_numpy(volume_to_model_slices(read_volume(source), self.cfg)[z])[None]


def read_rate(dataset: Dataset, workers: int, max_batches: int) -> float:
    idx = np.random.default_rng(0).integers(len(dataset), size=max_batches * 16).tolist()  # random access
    loader = DataLoader(torch.utils.data.Subset(dataset, idx), batch_size=16, num_workers=workers, shuffle=False)
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += batch.shape[0]
    return n / (time.perf_counter() - start)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantoms", type=int, default=24)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--max-batches", type=int, default=150)
    args = ap.parse_args()
    cfg = PreprocessingConfig(image_size=args.image_size)
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ds = FlareDataset.discover(write_phantom_dataset(tmp_path / "ph", n_labeled=0, n_unlabeled=args.phantoms))
        volumes = [c.image for c in ds.unlabeled]
        real = [c.image for c in FlareDataset.discover(REALCT).unlabeled] if REALCT.is_dir() else []
        volumes += real
        n_in = sum(read_volume(v).array.shape[0] for v in volumes)
        desc = f"{args.phantoms} phantoms 48x192x192" + (f" + {len(real)} realct unlabeled" if real else "")
        prep = {}
        for workers in (1, 2):
            start = time.perf_counter()
            manifest = build_slice_store(volumes, tmp_path / f"store{workers}", cfg, workers=workers, progress=False)
            prep[workers] = n_in / (time.perf_counter() - start)
            rows.append(
                (
                    f"prepare, {workers} worker{'s' * (workers > 1)}",
                    f"{prep[workers]:.1f} slices/s",
                    f"{n_in} input slices -> {manifest['n_slices']} kept, {len(volumes)} volumes ({desc})",
                )
            )
        rows.append(
            (
                "prepare speed-up 2 vs 1 workers",
                f"{prep[2] / prep[1]:.2f}x",
                "end to end, incl. starting the worker processes (forked on Linux)",
            )
        )
        store = SliceStore(tmp_path / "store1")
        for i in range(len(store)):  # warm the page cache so both reader settings see the same disk state
            store[i]
        # DataLoader workers run torch with 1 thread; in the main process the default 2 OpenMP threads make
        # torch.stack (the collate) ~100x slower on this loaded 2-core machine, so compare like with like.
        torch.set_num_threads(1)
        rates = {w: read_rate(store, w, args.max_batches) for w in (0, 2)}
        ref = read_rate(NiftiSlices(store), 0, 2)
        for w, r in rates.items():
            rows.append(
                (
                    f"read SliceStore, num_workers={w}",
                    f"{r:.0f} slices/s",
                    f"batch 16, {args.max_batches * 16} random slices, float16 memmap",
                )
            )
        rows.append(("read NIfTI + preprocess per item (reference)", f"{ref:.1f} slices/s", "batch 16, 32 slices"))
        rows.append(("store (num_workers=0) vs reference", f"{rates[0] / ref:.0f}x", ""))
    cmd = "python benchmarks/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    head = (
        f"machine: {os.cpu_count()} CPUs, {cpu_model()}; torch {torch.__version__}; image size "
        f"{args.image_size}; date {dt.datetime.now().isoformat(timespec='minutes')}"
    )
    width = max(len(r[0]) for r in rows)
    print(head)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>16}  {note}")
    md = [
        "# Data pipeline throughput",
        "",
        head,
        "",
        f"Command: `{cmd}`",
        "",
        "| measurement | value | notes |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        "The machine is shared (2 cores, several processes), so absolute numbers are noisy; the ratios are "
        "measured in the same run.",
        "",
    ]
    out = Path(__file__).resolve().parent / "results" / "data_throughput.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
