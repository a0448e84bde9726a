"""bfloat16 autocast vs float32 for what inference and fine-tuning run: the frozen encoder's features, an smp Unet
decoder training step on cached features, and an smp Unet resnet34 training step (the from-scratch baseline).

Each pair runs alternately in one process (median of ``--repeats`` after warm-up), so load changes on a shared
machine hit both alike; the ratio is fp32 time / bf16 time (> 1: bf16 faster). The library's ``precision="auto"``
(:mod:`smp_diffusion_encoder._device`) takes bf16 where oneDNN reports native bf16 kernels (printed below).

    python -m benchmarks.precision            # appends to benchmarks/results/precision.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import segmentation_models_pytorch as smp
import torch

import smp_diffusion_encoder  # noqa: F401  (registers ddpm-ct)
from benchmarks._machine import RESULTS, append_result, describe_machine, today
from benchmarks.train_step_options import cpu_flags
from smp_diffusion_encoder._device import cpu_supports_bf16

CL = torch.channels_last


def encoder_forward(batch: int, encoder_name: str = "ddpm-ct", size: int = 128) -> Callable[[bool], None]:
    encoder = (
        smp.Unet(encoder_name, encoder_weights=None, in_channels=1, classes=14).encoder.eval().to(memory_format=CL)
    )
    x = torch.randn(batch, 1, size, size).contiguous(memory_format=CL)

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


def decoder_step(batch: int, encoder_name: str = "ddpm-ct", size: int = 128) -> Callable[[bool], None]:
    model = smp.Unet(encoder_name, encoder_weights=None, in_channels=1, classes=14)
    model.encoder.requires_grad_(False)
    with torch.no_grad():
        feats = model.encoder(torch.randn(batch, 1, size, size))
    return train_step(model, lambda: feats, lambda f: model.segmentation_head(model.decoder(f)))


def resnet34_step(batch: int, size: int = 128) -> Callable[[bool], None]:
    model = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=14).to(memory_format=CL)
    x = torch.randn(batch, 1, size, size).contiguous(memory_format=CL)
    return train_step(model, lambda: x, model)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--encoder", default="ddpm-ct")
    p.add_argument("--size", type=int, default=128, help="slice size in pixels")
    p.add_argument("--out", type=Path, default=RESULTS / "precision.md")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    cases = {
        f"{args.encoder} encoder features, 8 slices (inference, feature cache)": encoder_forward(
            8, args.encoder, args.size
        ),
        f"smp Unet decoder step on cached {args.encoder} features, batch 4 (fine-tuning)": decoder_step(
            4, args.encoder, args.size
        ),
        "smp Unet resnet34 step, batch 4 (from-scratch baseline)": resnet34_step(4, args.size),
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
- Command: `python -m benchmarks.precision --repeats {args.repeats}`
- Median seconds of {args.repeats} alternating runs, {args.size} px slices, channels-last; speed-up = fp32 / bf16.

| what | fp32 | bf16 autocast | speed-up |
| --- | --- | --- | --- |
{chr(10).join(rows)}
"""
    print(text)
    append_result(args.out, "bfloat16 autocast vs float32 in inference and fine-tuning", text)


if __name__ == "__main__":
    main()
