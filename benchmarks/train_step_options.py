"""Faster DDPM pretraining on a CPU, measured: bf16 autocast, torch.compile and threads vs today's fp32 step.

Run through ``benchmarks/train_step.py --options --store STORE`` (this module holds the comparison).

All variants train the real pretraining step (:class:`~smp_diffusion_encoder.training.ddpm.DDPMStep`, hybrid loss,
AdamW) of the ``small`` U-Net on the same batch and are timed alternately in one process (median of
``--repeats``), so load changes on a shared machine hit them alike; ratios are against the fp32
channels-last step (the first release's). The CPU (model, AVX512-BF16 / AMX flags, oneDNN bf16 support) is
recorded: these machines differ between sessions, which is why ``smp-diffusion pretrain --precision auto``
measures at run time (:mod:`smp_diffusion_encoder.training.precision`).

The loss check trains two copies from the same initialization on the same batches (the slice store's first
``--loss-steps`` steps, position-seeded noise) in fp32 and with the faster setting and compares the mean loss of
each window of 25 steps: equal within noise means the difference between the curves is no larger than the
spread of the loss between windows.

    python benchmarks/train_step.py --options --store runs/store128   # a `smp-diffusion prepare-slices` store
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._machine import append_result, describe_machine, today
from smp_diffusion_encoder.data.slice_store import SliceStore
from smp_diffusion_encoder.diffusion import GaussianDiffusion, NoiseSchedule
from smp_diffusion_encoder.models import DiffusionUNet
from smp_diffusion_encoder.training.ddpm import DDPMStep
from smp_diffusion_encoder.training.precision import cpu_supports_bf16


def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return ", ".join(f for f in wanted if f" {f}" in flags) or "none of avx2/avx512/amx"


def make_step(model: torch.nn.Module, forward, step: DDPMStep, batch, bf16: bool):  # type: ignore[no-untyped-def]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)

    def run() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = step(forward, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return run


def compare(args: argparse.Namespace) -> str:
    """Time the CPU options and check the loss; ``args`` from ``train_step.py --options`` (store, batch, repeats,
    loss_steps, out). Returns the markdown section (also appended to ``args.out``)."""
    torch.manual_seed(0)
    store = SliceStore(args.store)
    x0 = torch.stack([store[i] for i in range(args.batch)])
    batch = (x0.contiguous(memory_format=torch.channels_last), torch.arange(args.batch))
    step = DDPMStep(GaussianDiffusion(NoiseSchedule()))
    base = DiffusionUNet("small")
    variants = {}
    for name, layout, bf16, compiled in (
        ("fp32, NCHW", torch.contiguous_format, False, False),
        ("fp32, channels-last (first release)", torch.channels_last, False, False),
        ("bf16 autocast, channels-last", torch.channels_last, True, False),
        ("fp32, channels-last, torch.compile", torch.channels_last, False, True),
        ("bf16 autocast, channels-last, torch.compile", torch.channels_last, True, True),
    ):
        model = copy.deepcopy(base).to(memory_format=layout)
        forward = torch.compile(model) if compiled else model
        variants[name] = make_step(model, forward, step, batch, bf16)
    compile_seconds = {}
    for name, run in variants.items():  # warm-up (and compilation)
        tick = time.perf_counter()
        run(), run()
        compile_seconds[name] = time.perf_counter() - tick
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            tick = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - tick)
    threads = torch.get_num_threads()
    one_thread = variants["bf16 autocast, channels-last"]
    torch.set_num_threads(1)
    single = []
    for _ in range(args.repeats):
        tick = time.perf_counter()
        one_thread()
        single.append(time.perf_counter() - tick)
    torch.set_num_threads(threads)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["fp32, channels-last (first release)"]
    rows = [f"| {k} | {v:.3f} s | {ref / v:.2f}x | {compile_seconds[k]:.0f} s |" for k, v in med.items()]
    rows.append(
        f"| bf16 autocast, channels-last, 1 thread (of {threads}) | {statistics.median(single):.3f} s | "
        f"{ref / statistics.median(single):.2f}x | – |"
    )
    loss_text = loss_check(base, store, step, args.batch, args.loss_steps)
    text = f"""
## CPU speed options, `small` preset, batch {args.batch}, 128 px

- Date: {today()}; machine: {describe_machine("cpu")}; CPU flags: {cpu_flags()}; oneDNN bf16 kernels:
  {"yes" if cpu_supports_bf16() else "no"}
- Command: `python benchmarks/train_step.py --options --store STORE --batch {args.batch} --repeats {args.repeats} --loss-steps {args.loss_steps}`
- Each row: median seconds per training step (forward, backward, AdamW) of {args.repeats} runs, timed alternately;
  speed relative to the first release's fp32 channels-last step; first-two-steps time (compilation, warm-up).

| variant | step | speed | warm-up |
| --- | --- | --- | --- |
{chr(10).join(rows)}

{loss_text}
"""
    print(text)
    append_result(args.out, "One DDPM training step: ours vs diffusers UNet2DModel", text)
    return text


def loss_check(base: torch.nn.Module, store: SliceStore, step: DDPMStep, batch: int, steps: int) -> str:
    losses = {}
    for name, bf16 in (("fp32", False), ("bf16 autocast", True)):
        model = copy.deepcopy(base).to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
        out = []
        for k in range(steps):
            index = [(k * batch + i) % len(store) for i in range(batch)]
            x0 = torch.stack([store[i] for i in index]).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss, _ = step(model, (x0, torch.tensor([k * batch + i for i in range(batch)])))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            out.append(float(loss.detach()))
        losses[name] = out
    window = 25
    means = {k: [statistics.mean(v[i : i + window]) for i in range(0, len(v), window)] for k, v in losses.items()}
    diffs = [a - b for a, b in zip(means["bf16 autocast"], means["fp32"])]
    spread = statistics.pstdev(means["fp32"][len(means["fp32"]) // 2 :]) if len(means["fp32"]) > 3 else float("nan")
    rows = "\n".join(
        f"| {i * window + 1}-{(i + 1) * window} | {a:.4f} | {b:.4f} | {b - a:+.4f} |"
        for i, (a, b) in enumerate(zip(means["fp32"], means["bf16 autocast"]))
    )
    return (
        f"Loss curves from the same initialization and batches ({steps} steps, windows of {window}; same data "
        f"order and position-seeded noise):\n\n| steps | fp32 | bf16 autocast | difference |\n| --- | --- | --- | --- |\n"
        f"{rows}\n\nLargest window difference {max(abs(d) for d in diffs):.4f}; spread (std) of the fp32 window "
        f"means over the second half: {spread:.4f}."
    )
