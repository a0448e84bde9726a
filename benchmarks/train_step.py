"""One DDPM training step (forward + backward + AdamW) of our U-Net vs diffusers' ``UNet2DModel``.

Both networks are built at a matched configuration from the same ``UNetConfig`` preset: widths
``model_channels * channel_mult``, ``num_res_blocks`` resnets per down level (+1 per up level),
self-attention at the same resolutions with the same head width, scale-shift time conditioning, GroupNorm
groups, a mid block with attention, 1 input channel and the same output channels. Resampling is by
strided / nearest+conv convolutions in both (``resblock_updown=False``): diffusers' ``UNet2DModel`` applies
``downsample_type="resnet"`` only to its attention blocks, so ADM's residual resampling everywhere cannot be
matched. With that, both have the same convolutions and the same forward FLOPs (printed).
They are timed alternately in the same process on the same batch (median of several steps after warm-up)
and the ratio diffusers / ours is printed (> 1 means ours is faster). On CUDA the step runs under bf16
autocast and the achieved TFLOP/s (from ``torch.utils.flop_counter``) is compared with the GPU's bf16 peak.
diffusers is only a benchmark dependency (``pip install diffusers``).

    python benchmarks/train_step.py                               # small preset, CPU, batch 4
    python benchmarks/train_step.py --device cuda --preset adm-256 --batch 16 --peak-tflops 989

``--options --store STORE`` instead times the CPU speed options of the real pretraining step (bf16 autocast,
torch.compile, threads) against the first release's fp32 channels-last step and checks that the loss curve stays
equal within noise (:mod:`benchmarks.train_step_options`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._machine import RESULTS, append_result, describe_machine, today
from smp_diffusion_encoder.models import DiffusionUNet, UNetConfig, get_preset


def diffusers_twin(cfg: UNetConfig) -> torch.nn.Module:
    from diffusers import UNet2DModel

    down, up = [], []
    for level in range(cfg.num_levels):
        attn = 2**level in cfg.attention_strides
        down.append("AttnDownBlock2D" if attn else "DownBlock2D")
        up.insert(0, "AttnUpBlock2D" if attn else "UpBlock2D")
    return UNet2DModel(
        sample_size=cfg.image_size,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        block_out_channels=cfg.level_channels,
        layers_per_block=cfg.num_res_blocks,
        downsample_type="conv",
        upsample_type="conv",
        attention_head_dim=cfg.num_head_channels,
        norm_num_groups=cfg.norm_groups,
        resnet_time_scale_shift="scale_shift",
        add_attention=True,
        dropout=cfg.dropout,
    )


def make_step(model, forward, opt, x, t, noise, device):
    def step():
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            out = forward(model, x, t)
            loss = F.mse_loss(out[:, : noise.shape[1]].float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def timed(step, device: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--channels-last", action="store_true", help="run both models in NHWC layout")
    p.add_argument("--peak-tflops", type=float, default=None, help="GPU bf16 dense peak, e.g. 989 for H100 SXM")
    p.add_argument("--out", type=Path, default=RESULTS / "train_step.md")
    p.add_argument("--options", action="store_true", help="compare the CPU speed options instead (needs --store)")
    p.add_argument("--store", type=Path, default=None, help="with --options: a 128 px slice store (pretraining data)")
    p.add_argument("--loss-steps", type=int, default=200, help="with --options: steps of the loss-curve check")
    args = p.parse_args()
    if args.options:
        if args.store is None:
            p.error("--options needs --store (a `smp-diffusion prepare-slices` folder)")
        from benchmarks.train_step_options import compare

        compare(args)
        return
    torch.manual_seed(0)
    cfg = get_preset(args.preset).replace(resblock_updown=False)  # see the module docstring
    dev = args.device
    ours, theirs = DiffusionUNet(cfg).to(dev), diffusers_twin(cfg).to(dev)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    ours, theirs = ours.to(memory_format=fmt), theirs.to(memory_format=fmt)
    n_ours, n_theirs = (sum(q.numel() for q in m.parameters()) for m in (ours, theirs))
    from torch.utils.flop_counter import FlopCounterMode

    probe = torch.randn(1, 1, cfg.image_size, cfg.image_size, device=dev)
    gflops = {}
    for name, fwd in (
        ("ours", lambda: ours(probe, torch.tensor([1], device=dev))),
        ("diffusers", lambda: theirs(probe, torch.tensor([1], device=dev)).sample),
    ):
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            fwd()
        gflops[name] = fc.get_total_flops() / 1e9
    x = torch.randn(args.batch, 1, cfg.image_size, cfg.image_size, device=dev).contiguous(memory_format=fmt)
    noise = torch.randn_like(x)
    t = torch.randint(0, 1000, (args.batch,), device=dev)
    steps = {
        "ours": make_step(ours, lambda m, a, b: m(a, b), torch.optim.AdamW(ours.parameters(), 1e-4), x, t, noise, dev),
        "diffusers": make_step(
            theirs, lambda m, a, b: m(a, b).sample, torch.optim.AdamW(theirs.parameters(), 1e-4), x, t, noise, dev
        ),
    }
    for s in steps.values():  # warm-up
        s()
        s()
    secs = {k: [] for k in steps}
    for _ in range(args.repeats):  # alternate so load changes hit both equally
        for k, s in steps.items():
            secs[k].append(timed(s, dev, 1))
    med = {k: statistics.median(v) for k, v in secs.items()}
    ratio = med["diffusers"] / med["ours"]
    flops_line = ""
    if dev == "cuda":
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            steps["ours"]()
        tflops = fc.get_total_flops() / med["ours"] / 1e12
        flops_line = f"achieved {tflops:.1f} TFLOP/s"
        if args.peak_tflops:
            flops_line += f" = {100 * tflops / args.peak_tflops:.1f}% of the {args.peak_tflops:.0f} TFLOP/s bf16 peak"
    print(
        f"params: ours {n_ours / 1e6:.2f} M, diffusers {n_theirs / 1e6:.2f} M; forward GFLOP per image: "
        f"ours {gflops['ours']:.2f}, diffusers {gflops['diffusers']:.2f}"
    )
    print(
        f"train step: ours {med['ours']:.3f} s, diffusers {med['diffusers']:.3f} s -> ours is {ratio:.2f}x "
        f"the speed of diffusers {flops_line}"
    )
    text = f"""
## {args.preset}, batch {args.batch}, {dev}{", channels-last" if args.channels_last else ""}

- Date: {today()}; machine: {describe_machine(dev)}
- Command: `python benchmarks/train_step.py --preset {args.preset} --batch {args.batch} --device {dev}{" --channels-last" if args.channels_last else ""}`
- Matched configuration (`{args.preset}` with conv resampling): parameters ours {n_ours / 1e6:.3f} M, diffusers
  {n_theirs / 1e6:.3f} M; forward GFLOP per image ours {gflops["ours"]:.2f}, diffusers {gflops["diffusers"]:.2f}

| model | train step (median of {args.repeats}, fp32{" / bf16 autocast" if dev == "cuda" else ""}) |
| --- | --- |
| diffusers `UNet2DModel` | {med["diffusers"]:.3f} s |
| ours `DiffusionUNet` | {med["ours"]:.3f} s |
| **ratio diffusers / ours** | **{ratio:.2f}x** {flops_line} |
"""
    append_result(args.out, "One DDPM training step: ours vs diffusers UNet2DModel", text)
    print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
