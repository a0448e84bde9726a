"""Throughput of DDPM training steps on this machine: the measurement stage of ``scripts/gpu_pretrain.py``.

For each ``--spec PRESET:SIZE`` (a U-Net preset trained at SIZE px), in order, within ``--seconds``:

1. the training step's FLOPs per image (forward + backward, ``FlopCounterMode``:
   :mod:`smp_diffusion_encoder.training.throughput`);
2. the step time at each ``--batch-sizes`` candidate, ascending, until memory runs out or time does: the
   step a ``smp-diffusion pretrain`` run takes (bf16 autocast where the device has it, channels-last, AdamW,
   :class:`~smp_diffusion_encoder.training.ddpm.DDPMStep` with noise drawn on the device), eager, on real
   slices held in device memory (``--store``, the first spec) or on random images (throughput only);
   achieved TFLOP/s, their share of ``--peak-tflops`` and the peak memory;
3. the batch to train with (first spec): the smallest candidate of at least ``--min-batch`` that reaches 95%
   of the best images/s (beyond the knee a larger batch only means fewer optimizer steps on a small set);
4. with ``--store``: the input pipeline at that batch: a batch indexed from device memory
   (:func:`~smp_diffusion_encoder.training.sampler.device_batches`) vs the ``DataLoader`` path, and noise drawn
   on the device (:func:`~smp_diffusion_encoder.training.ddpm.counter_noise`) vs on the CPU.

With ``--matmul-peak`` the device's bf16 matrix-product rate is measured first (8192^3, mean of 10 after 3
warm-ups), the figure the share of peak is read against beside ``--peak-tflops``. The JSON report
(``--json``) is rewritten after every measurement, so a stage cut short keeps what it measured.

    python scripts/gpu_measure.py --json m.json --spec small:128 --store .gpu/store128 --batch-sizes 256 512 1024
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from smp_diffusion_encoder._device import resolve_device, resolve_precision  # noqa: E402
from smp_diffusion_encoder._io import atomic_write_json  # noqa: E402
from smp_diffusion_encoder.data.slice_store import SliceStore  # noqa: E402
from smp_diffusion_encoder.diffusion.gaussian import GaussianDiffusion  # noqa: E402
from smp_diffusion_encoder.diffusion.schedule import NoiseSchedule  # noqa: E402
from smp_diffusion_encoder.models.unet import DiffusionUNet  # noqa: E402
from smp_diffusion_encoder.training.ddpm import DDPMStep, counter_noise, sample_noise  # noqa: E402
from smp_diffusion_encoder.training.sampler import InfiniteBatchSampler, PositionedDataset, device_batches  # noqa: E402
from smp_diffusion_encoder.training.throughput import time_train_step, unet_flops_per_sample  # noqa: E402

#: The bf16 matrix-product rate measured on this workplace's H200s (8192^3 through PyTorch: 788 TFLOP/s on
#: 2026-10-28, 769-798 on 2026-11-04; /work/.library/device/KINDS.md). The datasheet's dense figure is ~990.
H200_BF16_TFLOPS = 790.0
KNEE = 0.95


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "device": str(device),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(
            gpu=p.name,
            capability=f"{p.major}.{p.minor}",
            sms=p.multi_processor_count,
            memory_gib=round(p.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, n: int = 8192) -> float:
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    tick = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 2 * n**3 * 10 / (time.perf_counter() - tick) / 1e12


def choose_batch(rows: list[dict[str, Any]], min_batch: int) -> int | None:
    """The knee rule of the module docstring over the measured (not out-of-memory) rows."""
    ok = [r for r in rows if "images_per_s" in r]
    if not ok:
        return None
    big = [r for r in ok if r["batch_size"] >= min_batch] or [max(ok, key=lambda r: r["batch_size"])]
    best = max(r["images_per_s"] for r in big)
    return min(r["batch_size"] for r in big if r["images_per_s"] >= KNEE * best)


def time_ms(device: torch.device, fn: Any, n: int) -> float:
    sync(device)
    tick = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - tick) / n * 1e3


def input_pipeline(store: SliceStore, data: torch.Tensor, batch: int, device: torch.device) -> dict[str, float]:
    """Milliseconds per batch of each way to feed a step (module docstring, point 4)."""
    from torch.utils.data import DataLoader

    shape = tuple(data.shape[1:])
    on_device = device_batches(data, InfiniteBatchSampler(len(store), batch, seed=0))
    loader = iter(
        DataLoader(
            PositionedDataset(store),
            batch_sampler=InfiniteBatchSampler(len(store), batch, seed=0),
            pin_memory=device.type == "cuda",
        )
    )
    positions = torch.arange(batch)
    return {
        "batch_size": batch,
        "device_batch_ms": time_ms(device, lambda: next(on_device), 20),
        "dataloader_batch_ms": time_ms(device, lambda: [t.to(device, non_blocking=True) for t in next(loader)], 5),
        "device_noise_ms": time_ms(device, lambda: counter_noise(positions.to(device), shape, 1000, 0), 20),
        "cpu_noise_ms": time_ms(
            device, lambda: [t.to(device, non_blocking=True) for t in sample_noise(positions, shape, 1000, 0)], 2
        ),
    }


def measure_spec(
    entry: dict[str, Any],
    args: argparse.Namespace,
    device: torch.device,
    report: dict[str, Any],
    deadline: float,
    save: Any,
) -> None:
    """Fill ``entry`` (``{"spec": "PRESET:SIZE"}``) with the measurements of the module docstring."""
    preset, size = entry["spec"].split(":")
    size_px = int(size)
    entry.update(preset=preset, image_size=size_px, batches=[])
    precision = resolve_precision("auto", device)
    entry["precision"] = precision
    with torch.device(device):  # built where it runs: the 550 M-parameter adm-256 initializes in seconds
        model = DiffusionUNet(preset)
    model = model.to(memory_format=torch.channels_last)
    entry["parameters"] = sum(p.numel() for p in model.parameters())
    step = DDPMStep(GaussianDiffusion(NoiseSchedule("linear")), noise_rng="device")
    entry["flops_per_image"] = flops = unet_flops_per_sample(model, step, size_px)
    store = SliceStore(args.store) if args.store and not report.get("store_used") else None
    if store is not None and store.config.image_size != size_px:
        store = None
    largest = max(args.batch_sizes)
    if store is not None:
        data = store.load_all().to(device)
        report["store_used"] = {
            "path": str(args.store),
            "n_slices": len(store),
            "volumes": [Path(s["source"]).name for s in store.shards],
        }
        entry["data"] = "slice store"
    else:
        gen = torch.Generator(device).manual_seed(0)
        data = (
            torch.rand(largest, model.config.in_channels, size_px, size_px, device=device, generator=gen) * 2 - 1
        ).half()
        entry["data"] = "random images (throughput only)"
    save()
    peak = args.peak_tflops
    last: dict[str, Any] | None = None
    for batch in sorted(args.batch_sizes):
        if last is not None:  # expected time of this candidate from the last one: skip what cannot finish
            guess = (args.warmup + args.repeats + 1) * last["step_s"] * batch / last["batch_size"] + 5
            if time.monotonic() + guess > deadline:
                entry["batches"].append({"batch_size": batch, "skipped": "time"})
                break
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        try:
            x0, positions = next(device_batches(data, InfiniteBatchSampler(len(data), batch, seed=0)))
            timing = time_train_step(
                model, step, (x0, positions), optimizer, precision=precision, warmup=args.warmup, repeats=args.repeats
            )
        except torch.cuda.OutOfMemoryError:
            entry["batches"].append({"batch_size": batch, "oom": True})
            break
        finally:
            del optimizer
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        row = timing.to_dict()
        row["tflop_s"] = flops * timing.images_per_s / 1e12
        row["share_of_peak"] = row["tflop_s"] / peak
        entry["batches"].append(row)
        last = row
        save()
        if time.monotonic() > deadline:
            break
    fitted = [r["batch_size"] for r in entry["batches"] if "images_per_s" in r]
    entry["largest_batch_that_fit"] = max(fitted) if fitted else None
    entry["chosen_batch"] = choose_batch(entry["batches"], args.min_batch)
    save()
    if store is not None and entry["chosen_batch"] and time.monotonic() + 10 < deadline:
        entry["input_pipeline"] = input_pipeline(store, data, entry["chosen_batch"], device)
        save()
    del model, data
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, required=True, help="report to write")
    p.add_argument("--spec", action="append", required=True, metavar="PRESET:SIZE")
    p.add_argument("--store", type=Path, default=None, help="slice store for the first spec of its size")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    p.add_argument("--min-batch", type=int, default=256)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seconds", type=float, default=120.0, help="time budget of the whole stage")
    p.add_argument("--peak-tflops", type=float, default=H200_BF16_TFLOPS)
    p.add_argument("--matmul-peak", action="store_true")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    start = time.monotonic()
    deadline = start + args.seconds
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the pretraining run sets it
    report: dict[str, Any] = {"machine": machine(device), "peak_tflops": args.peak_tflops, "specs": []}

    def save() -> None:
        report["seconds"] = round(time.monotonic() - start, 1)
        atomic_write_json(args.json, report)

    if args.matmul_peak and device.type == "cuda":
        report["matmul_bf16_tflops"] = round(matmul_tflops(device), 1)
    save()
    for spec in args.spec:
        entry: dict[str, Any] = {"spec": spec}
        report["specs"].append(entry)
        if time.monotonic() + 5 > deadline:
            entry["skipped"] = "time"
            break
        try:
            measure_spec(entry, args, device, report, deadline, save)
        except Exception as err:  # one spec failing (e.g. out of memory building it) keeps the others
            entry["error"] = f"{type(err).__name__}: {err}"
            if device.type == "cuda":
                torch.cuda.empty_cache()
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
