"""Linear probe memory: native-resolution logits (ours) vs the naive upsampled feature stack; and the
time to segment a 512x512x100 CT volume on this machine.

Memory. One training step (forward + backward + Adam step; cross-entropy over all pixels, the slices in
micro-batches with gradients accumulated: exactly one full-batch step) of the per-pixel linear classifier
on N labeled 256x256 slices whose features were cached beforehand:

* ours: the cache holds each stride's map at native resolution in float16 (as
  :class:`~smp_diffusion_encoder.heads.FeatureCache` stores it) and :class:`~smp_diffusion_encoder.heads.LinearProbe`
  upsamples only the K logit channels;
* naive (Baranchuk et al.): the cache is the upsampled, concatenated stack ``(N, D, 256, 256)`` in float32
  (their dtype), classified by one 1x1 conv.

Both caches are built inside the measured process. Each (method, N) runs in a fresh subprocess that writes
"5" to ``/proc/self/clear_refs`` (resets the peak RSS to the current RSS) after its imports, then reports
``VmHWM`` (peak RSS) minus the RSS at that point: the memory the method itself needs. (``ru_maxrss`` is not
used: it survives ``exec`` and would report the parent's peak.) Feature values are random with the exact
shapes of the ``small`` preset's features at 3 timesteps; memory does not depend on the values. The naive
stack runs only for N whose predicted size fits in a third of the available memory; its 50-slice value
is extrapolated linearly from those runs (memory is affine in N).

Inference. ``smp.Unet("ddpm-ct")`` (random weights, 14 classes) at 128 px on a 512x512 phantom volume through
:func:`~smp_diffusion_encoder.inference.predict_files` (read, preprocess, predict, map back, write);
a volume of ``--z`` slices is timed and the time extrapolated linearly to 100 slices.

    python benchmarks/probe_memory.py                  # both, writes results/probe_memory.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._machine import RESULTS, describe_machine, today
from smp_diffusion_encoder.encoder import DiffusionFeatureEncoder, FeatureConfig
from smp_diffusion_encoder.heads import LinearProbe
from smp_diffusion_encoder.models import DiffusionUNet

SIZE, CLASSES, TIMESTEPS = 256, 14, (50, 150, 250)
SELECTIONS = {"default": None, "baranchuk": (5, 6, 7, 8, 12)}


def feature_shapes(selection: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(channels, strides)`` of the small preset's features (computed on the meta device)."""
    with torch.device("meta"):
        enc = DiffusionFeatureEncoder(
            DiffusionUNet("small"), FeatureConfig(TIMESTEPS, SELECTIONS[selection]), channels_last=False
        )
    return enc.channels, enc.strides


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _native_maps(channels: tuple[int, ...], strides: tuple[int, ...]) -> list[torch.Tensor]:
    """One slice's features at native resolution, ``[(1, C_s, 256 / s, 256 / s)]`` float32."""
    return [torch.randn(1, c, SIZE // s, SIZE // s) for c, s in zip(channels, strides)]


def child(method: str, n: int, selection: str, micro: int) -> dict:
    """Build the cache and run one training step; return peak memory growth (MiB) and step time."""
    torch.manual_seed(0)
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kib("VmRSS")
    channels, strides = feature_shapes(selection)
    labels = torch.randint(0, CLASSES, (n, SIZE, SIZE))
    if method == "ours":
        cache = [torch.randn(n, c, SIZE // s, SIZE // s, dtype=torch.float16) for c, s in zip(channels, strides)]
        probe = LinearProbe(channels, strides, CLASSES)
        params = list(probe.parameters())
        logits_of = lambda sl: probe([f[sl] for f in cache], (SIZE, SIZE))  # noqa: E731
    else:
        stack = torch.empty(n, sum(channels), SIZE, SIZE)  # Baranchuk: preallocated, filled image by image
        for i in range(n):
            ups = [F.interpolate(f, size=(SIZE, SIZE), mode="bilinear") for f in _native_maps(channels, strides)]
            torch.cat(ups, dim=1, out=stack[i : i + 1])
        weight = torch.nn.Parameter(torch.randn(CLASSES, sum(channels), 1, 1) * sum(channels) ** -0.5)
        bias = torch.nn.Parameter(torch.zeros(CLASSES))
        params = [weight, bias]
        logits_of = lambda sl: F.conv2d(stack[sl], weight, bias)  # noqa: E731
    opt = torch.optim.Adam(params, lr=1e-3)
    start = time.perf_counter()
    opt.zero_grad()
    for lo in range(0, n, micro):
        sl = slice(lo, min(n, lo + micro))
        loss = F.cross_entropy(logits_of(sl), labels[sl]) * (sl.stop - sl.start) / n
        loss.backward()
    opt.step()
    step = time.perf_counter() - start
    return {"peak_mib": (_status_kib("VmHWM") - base) / 1024, "step_s": step}


def measure(method: str, n: int, selection: str, micro: int) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--n", str(n), "--selection", selection, "--micro", str(micro)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def time_inference(z: int) -> dict:
    """Seconds for predict_files on a (z, 512, 512) phantom with smp.Unet("ddpm-ct") at 128 px."""
    import segmentation_models_pytorch as smp

    import smp_diffusion_encoder  # noqa: F401
    from smp_diffusion_encoder.data.phantom import write_phantom_dataset
    from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
    from smp_diffusion_encoder.inference import load_model, predict_files, save_segmenter

    with tempfile.TemporaryDirectory() as tmp:
        root = write_phantom_dataset(Path(tmp) / "ct", n_labeled=1, n_unlabeled=0, shape=(z, 512, 512))
        image = next((root / "Training/FLARE22_LabeledCase50/images").glob("*.nii.gz"))
        model = smp.Unet("ddpm-ct", encoder_weights=None, in_channels=1, classes=CLASSES)
        save_segmenter(model, Path(tmp) / "model", PreprocessingConfig(image_size=128))
        loaded = load_model(Path(tmp) / "model")
        runs = []
        for _ in range(2):  # best of 2: other users' load on a shared machine only ever adds time
            start = time.perf_counter()
            predict_files([image], loaded, Path(tmp) / "pred", batch_size=8, progress=False)
            runs.append(time.perf_counter() - start)
        seconds = min(runs)
    return {"z": z, "seconds": seconds, "runs": runs, "per_slice": seconds / z, "per_100": seconds / z * 100}


def _available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50, help="labeled slices")
    p.add_argument("--naive-n", default="1,2,4,8", help="slice counts tried for the naive stack")
    p.add_argument("--micro", type=int, default=1, help="slices per micro-batch in the training step")
    p.add_argument("--z", type=int, default=12, help="slices of the timed inference volume")
    p.add_argument("--child", choices=("ours", "naive"), help=argparse.SUPPRESS)
    p.add_argument("--selection", default="default", choices=sorted(SELECTIONS), help=argparse.SUPPRESS)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n, args.selection, args.micro)))
        return

    lines, rows = [], []
    for selection in SELECTIONS:
        channels, strides = feature_shapes(selection)
        d = sum(channels)
        ours = measure("ours", args.n, selection, args.micro)
        naive_pts = []
        for n in (int(v) for v in args.naive_n.split(",")):
            if n * d * SIZE * SIZE * 4 / 2**20 > _available_mib() / 3:
                break
            naive_pts.append((n, measure("naive", n, selection, args.micro)))
        (n1, a), (n2, b) = naive_pts[-2], naive_pts[-1]
        slope = (b["peak_mib"] - a["peak_mib"]) / (n2 - n1)
        naive_50 = b["peak_mib"] + slope * (args.n - n2)
        same_n = measure("ours", n2, selection, args.micro)
        rows.append((selection, channels, strides, d, ours, naive_pts, naive_50, same_n))
        print(selection, d, ours, naive_pts, f"naive@{args.n}~{naive_50:.0f} MiB", flush=True)
    inf = time_inference(args.z)
    print(inf, flush=True)

    lines += [
        "# Linear probe memory (native-resolution logits vs upsampled stack) and volume inference time",
        "",
        f"- Date: {today()}",
        f"- Machine: {describe_machine()}",
        f"- Command: `python benchmarks/probe_memory.py --n {args.n} --naive-n {args.naive_n} --micro {args.micro} --z {args.z}`",
        f"- Setup: linear probe (K={CLASSES}) on N={args.n} labeled {SIZE}x{SIZE} slices, `small` preset features at "
        f"timesteps {TIMESTEPS}; one training step (forward + backward + Adam) over all N slices in micro-batches "
        f"of {args.micro}; peak RSS growth (VmHWM after clear_refs) in a fresh subprocess, caches included. "
        "Step times are not reported: on this shared machine they varied tenfold with other users' load. "
        "Ours: per-stride native maps in float16 (the FeatureCache layout). Naive: (N, D, 256, 256) float32 stack "
        "(Baranchuk et al.'s layout and dtype). Random feature values of the exact shapes.",
        "",
        "| feature blocks | strides | channels per stride | D | ours, N=50 | naive, measured | naive, N=50 (extrapolated) | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for selection, channels, strides, d, ours, pts, naive_50, same_n in rows:
        blocks = "one per stride (`ddpm-ct` default)" if selection == "default" else "Baranchuk (5, 6, 7, 8, 12)"
        measured = ", ".join(f"N={n}: {r['peak_mib']:.0f} MiB" for n, r in pts)
        lines.append(
            f"| {blocks} | {strides} | {channels} | {d} | {ours['peak_mib']:.0f} MiB | "
            f"{measured} | {naive_50:.0f} MiB | **{naive_50 / ours['peak_mib']:.1f}x less** |"
        )
    lines += [""]
    for selection, channels, strides, d, ours, pts, naive_50, same_n in rows:
        n2, r2 = pts[-1]
        lines.append(
            f"- {selection}: the naive stack alone is {args.n * d * SIZE * SIZE * 4 / 2**20:.0f} MiB at N={args.n} "
            f"(N x D x 256 x 256 x 4 bytes); ours caches {args.n * sum(c * (SIZE // s) ** 2 for c, s in zip(channels, strides)) * 2 / 2**20:.0f} MiB. "
            f"At the largest measured N={n2} both ran: ours {same_n['peak_mib']:.0f} MiB, naive "
            f"{r2['peak_mib']:.0f} MiB: {r2['peak_mib'] / same_n['peak_mib']:.1f}x."
        )
    d0 = rows[0]
    share = d0[1][0] * SIZE**2 / sum(c * (SIZE // st) ** 2 for c, st in zip(d0[1], d0[2]))
    lines += [
        "",
        "Why the `ddpm-ct` default stays below 20x: its features include a full-resolution (stride-1) block, "
        f"{share:.0%} of the native cache, which no method can shrink; the element ratio of stack to cache "
        f"is then {d0[3] * SIZE**2 / sum(c * (SIZE // st) ** 2 for c, st in zip(d0[1], d0[2])):.1f}x, and "
        "float16 storage doubles it, so even a zero-overhead step could reach only about twice that. "
        "Baranchuk et al.'s block choice has no stride-1 block and clears 20x with a wide margin.",
        "",
        "## Full-volume inference on CPU",
        "",
        f'`smp.Unet("ddpm-ct")` (random weights) at 128 px, batch 8, via `predict_files` (read NIfTI, window, '
        f"resize, predict, map probabilities back to 512x512, argmax, write the label map). Timed on a "
        f"{inf['z']}x512x512 phantom and extrapolated linearly to 100 slices (not run at 100 slices on this "
        f"shared 2-core machine): **{inf['per_slice']:.2f} s/slice, about {inf['per_100']:.0f} s per 512x512x100 volume** "
        f"(best of 2 runs of {inf['z']} slices: " + ", ".join(f"{t:.1f} s" for t in inf["runs"]) + "; other users' "
        "load on this shared machine slows runs unpredictably, so the faster run is reported).",
        "",
    ]
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "probe_memory.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
