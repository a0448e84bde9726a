"""bfloat16 autocast vs float32 for what inference and fine-tuning run: the frozen encoder's features, an smp Unet
decoder training step on cached features, and an smp Unet resnet34 training step (the from-scratch baseline).

Each pair runs alternately in one process (median of ``--repeats`` after warm-up), so load changes on a shared
machine hit both alike; the ratio is fp32 time / bf16 time (> 1: bf16 faster). The library's ``precision="auto"``
(:mod:`smp_diffusion_encoder._device`) takes bf16 where oneDNN reports native bf16 kernels (printed below).

    python benchmarks/precision.py            # appends to benchmarks/results/precision.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import segmentation_models_pytorch as smp

import smp_diffusion_encoder  # noqa: F401  (registers ddpm-ct)
from benchmarks._machine import RESULTS, append_result, describe_machine, today
from benchmarks.train_step_options import cpu_flags
from smp_diffusion_encoder._device import cpu_supports_bf16

CL = torch.channels_last


def encoder_forward(batch: int) -> Callable[[bool], None]:
    encoder = smp.Unet("ddpm-ct", encoder_weights=None, in_channels=1, classes=14).encoder.eval().to(memory_format=CL)
    x = torch.randn(batch, 1, 128, 128).contiguous(memory_format=CL)

    def run(bf16: bool) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            encoder(x)

    return run


def train_step(
    model: torch.nn.Module, inputs: Callable[[], object], forward: Callable[[object], torch.Tensor]
) -> Callable[[bool], None]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, 1e-3)

    def run(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = forward(inputs())
        loss = out.float().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return run


def decoder_step(batch: int) -> Callable[[bool], None]:
    model = smp.Unet("ddpm-ct", encoder_weights=None, in_channels=1, classes=14)
    model.encoder.requires_grad_(False)
    with torch.no_grad():
        feats = model.encoder(torch.randn(batch, 1, 128, 128))
    return train_step(model, lambda: feats, lambda f: model.segmentation_head(model.decoder(f)))


def resnet34_step(batch: int) -> Callable[[bool], None]:
    model = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=14).to(memory_format=CL)
    x = torch.randn(batch, 1, 128, 128).contiguous(memory_format=CL)
    return train_step(model, lambda: x, model)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path, default=RESULTS / "precision.md")
    args = p.parse_args()
    torch.manual_seed(0)
    cases = {
        "ddpm-ct encoder features, 8 slices (inference, feature cache)": encoder_forward(8),
        "smp Unet decoder step on cached ddpm-ct features, batch 4 (fine-tuning)": decoder_step(4),
        "smp Unet resnet34 step, batch 4 (from-scratch baseline)": resnet34_step(4),
    }
    rows = []
    for name, run in cases.items():
        for bf16 in (False, True, False, True):  # warm-up (oneDNN primitives)
            run(bf16)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for bf16 in (False, True):
                tick = time.perf_counter()
                run(bf16)
                times[bf16].append(time.perf_counter() - tick)
        fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
        rows.append(f"| {name} | {fp32:.3f} s | {bf16:.3f} s | {fp32 / bf16:.2f}x |")
        print(rows[-1], flush=True)
    text = f"""
## {today()}

- Machine: {describe_machine("cpu")}; CPU flags: {cpu_flags()}; oneDNN bf16
  kernels: {"yes" if cpu_supports_bf16() else "no"} (so `precision="auto"` takes
  {"bf16" if cpu_supports_bf16() else "fp32"} here)
- Command: `python benchmarks/precision.py --repeats {args.repeats}`
- Median seconds of {args.repeats} alternating runs, 128 px slices, channels-last; speed-up = fp32 / bf16.

| what | fp32 | bf16 autocast | speed-up |
| --- | --- | --- | --- |
{chr(10).join(rows)}
"""
    print(text)
    append_result(args.out, "bfloat16 autocast vs float32 in inference and fine-tuning", text)


if __name__ == "__main__":
    main()
