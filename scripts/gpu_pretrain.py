"""One prepared DDPM pretraining run on one GPU, measured, with its results written under ``--out`` ($OUT).

Run by ``scripts/gpu_pretrain_run.sh`` (how to call it: ``benchmarks/results/gpu_pretrain.md``). Stages, each
a subprocess, so a crash or hang in one loses nothing the others wrote:

1. **measure** (``scripts/gpu_measure.py``, eager): the GPU's bf16 matmul rate, the step's FLOPs, images/s,
   TFLOP/s and memory of the ``--preset`` at each ``--batch-sizes`` candidate on the slice store held in GPU
   memory; the batch to train with; the input pipeline.
2. **pretrain**: ``python -m smp_diffusion_encoder.cli.main pretrain STORE --out WORK/run ...``, the command
   users run, at that batch with bf16, channels-last, the store in GPU memory, noise drawn on the GPU,
   ``--compile`` (unless ``--no-compile``), ``--max-minutes`` of training clock and EMA milestones at
   ``--milestone-minutes``. While it runs, each milestone is copied as float16 into ``OUT/run/milestones/``
   as it appears, ``config.json`` and ``metrics.csv`` every few seconds. A failed compiled run is resumed
   once without compiling. If the run must be stopped at the deadline, the last checkpoint's EMA weights
   stand in for the final milestone.
3. **hires**: throughput only at 256 px (``--hires``, the paper's ``adm-256`` first), eager, random images.

``--minutes`` is shortened to fit ``--deadline-minutes`` (the whole command) with allowances for start-up
and compilation; the 256 px stage gets what is left (at least ``--hires-min-seconds``).

OUT (at most 8 files, 16 MiB each, 64 MiB in all, names of letters, digits, ``._-``; checked at the end;
written by ``scripts/gpu_out.py``)::

    throughput.json                    every figure: machine, peak, per-batch step times, the run's
                                       steady-state speed, compile time vs gain, milestones, 256 px
    log.txt                            this script's log and the subprocesses' output (trimmed to fit)
    run/config.json, run/metrics.csv   the pretraining run's (a run folder once copied back)
    run/milestones/step-N.safetensors  EMA U-Net weights (float16) at the milestone points, at most 4

Copied back, ``run/`` is a run folder that ``smp-diffusion export run weights/X --milestone N``,
``smp-diffusion sample`` and ``scripts/ship_default_weights.py`` read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gpu_out import FIXED_FILES, MAX_FILES, REPO, Log, Results, env, read_rows, stop, stream

STARTUP_S, COMPILE_S, END_S = 30.0, 60.0, 15.0  # planning allowances of the pretrain stage
MEASURE_STARTUP_S = 10.0  # a measure subprocess's interpreter, torch and CUDA start-up


def summarize_run(
    results: Results, batch: int, flops: float | None, peak: float, eager: dict[str, Any] | None
) -> dict[str, Any]:
    """The pretraining run's speed from its metrics.csv (steady state: every row but the first)."""
    from safetensors import safe_open

    rows = read_rows(results.work_run / "metrics.csv")
    summary: dict[str, Any] = {"batch_size": batch, "rows": len(rows)}
    if not rows:
        return summary
    last = rows[-1]
    steady = rows[1:] or rows
    ips = statistics.median(r["images_per_s"] for r in steady)
    step_s = statistics.median(r["step_s"] for r in steady if "step_s" in r) if "step_s" in steady[0] else batch / ips
    summary.update(
        steps=int(last["step"]),
        images_seen=int(last["step"]) * batch,
        train_minutes=round(last.get("time_s", float("nan")) / 60, 3),
        final_loss=last["loss"],
        warmup_s=rows[0].get("warmup_s"),
        steady={
            "images_per_s": ips,
            "step_s": step_s,
            "peak_memory_gib": max((r["max_mem_gib"] for r in rows if "max_mem_gib" in r), default=None),
        },
    )
    if flops:
        tflops = flops * ips / 1e12
        summary["steady"].update(tflop_s=tflops, share_of_peak=tflops / peak)
    if eager and summary.get("warmup_s") is not None:
        speedup = eager["step_s"] / step_s
        extra = summary["warmup_s"] - eager["first_step_s"]
        summary["compile_vs_eager"] = {
            "eager_step_s": eager["step_s"],
            "run_step_s": step_s,
            "speedup": speedup,
            "extra_first_step_s": extra,
            "break_even_train_s": extra / (1 - 1 / speedup) if speedup > 1 else None,
            "note": "eager: measure stage (forward, backward, AdamW); run: the Trainer's step, which also clips "
            "gradients and updates the EMA, so the speed-up is a lower bound",
        }
    milestones = []
    for path in results.milestone_files():
        with safe_open(str(path), "pt") as fh:
            meta = dict(fh.metadata() or {})
        step = int(meta.get("step", -1))
        seconds = float(meta.get("train_seconds", "nan"))
        milestones.append(
            {
                "file": f"run/milestones/{path.name}",
                "step": step,
                "images_seen": step * batch,
                "train_minutes": round(seconds / 60, 3),
                "source": meta.get("source", "run"),
                "mib": round(path.stat().st_size / 2**20, 2),
            }
        )
    summary["milestones"] = milestones
    return summary


def progress_line(results: Results, batch: int, flops: float | None, peak: float) -> str | None:
    rows = read_rows(results.work_run / "metrics.csv")
    if not rows:
        return None
    r = rows[-1]
    text = (
        f"step {int(r['step'])} | loss {r['loss']:.4f} | {r['images_per_s']:.0f} img/s | "
        f"{r.get('step_s', float('nan')) * 1e3:.1f} ms/step | clock {r.get('time_s', 0) / 60:.2f} min"
    )
    if flops:
        tflops = flops * r["images_per_s"] / 1e12
        text += f" | {tflops:.1f} TFLOP/s = {tflops / peak:.1%} of {peak:.0f}"
    if "max_mem_gib" in r:
        text += f" | peak {r['max_mem_gib']:.1f} GiB"
    return text


def run_measure(
    args: argparse.Namespace,
    specs: list[str],
    batch_sizes: list[int],
    seconds: float,
    json_path: Path,
    log: Log,
    *,
    store: Path | None,
    min_batch: int,
    matmul: bool,
) -> dict[str, Any]:
    """Run ``scripts/gpu_measure.py`` as a subprocess within about ``seconds`` (its start-up included)."""
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "gpu_measure.py"),
        "--json",
        str(json_path),
        "--device",
        args.device,
        "--batch-sizes",
        *map(str, batch_sizes),
        "--min-batch",
        str(min_batch),
        "--seconds",
        f"{max(seconds - MEASURE_STARTUP_S, 5):.0f}",
        "--peak-tflops",
        str(args.peak_tflops),
        "--warmup",
        str(args.measure_warmup),
        "--repeats",
        str(args.measure_repeats),
    ]
    for spec in specs:
        cmd += ["--spec", spec]
    cmd += ["--store", str(store)] if store else []
    cmd += ["--matmul-peak"] if matmul else []
    log("$ " + " ".join(cmd))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pump = stream(proc, log, "measure")
    try:
        proc.wait(seconds + 30)
    except subprocess.TimeoutExpired:
        stop(proc, log, "measure stage over its time")
    pump.join(5)
    log(f"measure stage exit status {proc.returncode}")
    return json.loads(json_path.read_text()) if json_path.is_file() else {}


def pretrain_cmd(
    args: argparse.Namespace,
    run_dir: Path,
    batch: int,
    minutes: float,
    milestones: list[float],
    compile_: bool,
    resume: bool,
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "smp_diffusion_encoder.cli.main",
        "pretrain",
        str(args.store),
        "--out",
        str(run_dir),
        "--preset",
        args.preset,
        "--batch-size",
        str(batch),
        "--lr",
        str(args.lr),
        "--warmup-steps",
        str(args.warmup_steps),
        "--ema-decay",
        str(args.ema_decay),
        "--seed",
        str(args.seed),
        "--steps",
        str(args.max_steps),
        "--max-minutes",
        f"{minutes:.4g}",
        "--log-every",
        str(args.log_every),
        "--ckpt-every",
        str(args.ckpt_every),
        "--precision",
        "auto",
        "--preload",
        "on",
        "--noise-rng",
        "device",
        "--device",
        args.device,
        "--no-progress",
        "--compile" if compile_ else "--no-compile",
    ]
    if milestones:
        cmd += ["--milestone-minutes", *(f"{m:.4g}" for m in milestones)]
    return cmd + (["--resume"] if resume else [])


def run_pretrain(
    args: argparse.Namespace, results: Results, log: Log, batch: int, deadline: float, flops: float | None
) -> dict[str, Any]:
    run_dir = results.work_run
    info: dict[str, Any] = {"attempts": []}
    compile_ = args.compile
    for attempt in range(2):
        budget = deadline - time.monotonic() - STARTUP_S - END_S - (COMPILE_S if compile_ else 0.0)
        minutes = min(args.minutes, budget / 60)
        if minutes < 0.25:
            log(f"no time left to train ({budget:.0f} s)")
            break
        if minutes < args.minutes:
            log(f"training shortened to {minutes:.2f} min of clock to end by the deadline")
        milestones = sorted({min(m, minutes) for m in args.milestone_minutes})
        cmd = pretrain_cmd(args, run_dir, batch, minutes, milestones, compile_, resume=attempt > 0)
        log("$ " + " ".join(cmd))
        info["attempts"].append({"command": " ".join(cmd), "compile": compile_, "minutes": minutes})
        proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        pump = stream(proc, log, "pretrain")
        last_report, last_line = 0.0, None
        while proc.poll() is None:
            time.sleep(1.0)
            results.sync_milestones()
            if time.monotonic() - last_report >= args.report_every:
                last_report = time.monotonic()
                results.copy_run_files()
                line = progress_line(results, batch, flops, args.peak_tflops)
                if line and line != last_line:
                    log(line)
                last_line = line
            if time.monotonic() > deadline:
                stop(proc, log, "the stage's deadline")
        pump.join(5)
        info["attempts"][-1]["returncode"] = proc.returncode
        results.sync_milestones()
        results.copy_run_files()
        log(f"pretrain exit status {proc.returncode}")
        if proc.returncode == 0 or not compile_:
            break
        log("the compiled run failed: resuming it once without --compile")
        compile_ = False
    results.final_from_checkpoint()
    info["compile"] = compile_
    return info


def main(argv: list[str] | None = None) -> int:
    start = time.monotonic()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="results folder ($OUT)")
    p.add_argument("--store", type=Path, required=True, help="slice store (scripts/gpu_prepare.sh)")
    p.add_argument("--work", type=Path, default=None, help="run folder parent (default: a new temporary folder)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="small")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    p.add_argument("--min-batch", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=None, help="train at this batch instead of the measured one")
    p.add_argument(
        "--measure-seconds",
        type=float,
        default=None,
        help="time budget of the measure stage (default: 15%% of the deadline, 30 to 120 s)",
    )
    p.add_argument("--measure-warmup", type=int, default=2, help="untimed steps per measured batch size")
    p.add_argument("--measure-repeats", type=int, default=5, help="timed steps per measured batch size")
    p.add_argument("--minutes", type=float, default=6.5, help="training clock of the pretraining run")
    p.add_argument("--milestone-minutes", type=float, nargs="+", default=[0.5, 1.5, 3.5, 6.5])
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--ema-decay", type=float, default=0.9999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=10_000_000)
    p.add_argument("--log-every", type=int, default=200)
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--report-every", type=float, default=15.0, help="seconds between progress lines")
    p.add_argument("--hires", nargs="*", default=["adm-256:256", "small:256"], metavar="PRESET:SIZE")
    p.add_argument("--hires-batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    p.add_argument("--hires-seconds", type=float, default=45.0)
    p.add_argument("--hires-min-seconds", type=float, default=25.0)
    p.add_argument("--deadline-minutes", type=float, default=9.4, help="the whole command, from this start")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=790.0,
        help="bf16 peak the share is read against (KINDS.md: 769-798 measured on H200s here)",
    )
    args = p.parse_args(argv)

    deadline = start + 60 * args.deadline_minutes
    if len(args.milestone_minutes) > MAX_FILES - FIXED_FILES:
        p.error(f"at most {MAX_FILES - FIXED_FILES} milestones fit OUT's {MAX_FILES}-file limit")
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_pretrain_"))
    out = args.out
    log = Log(out / "log.txt")
    results = Results(out, work / "run", log, MAX_FILES - FIXED_FILES)
    results.report["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    hires_reserve = args.hires_seconds if args.hires else 0.0
    log(f"gpu_pretrain: store {args.store}, work {work}, out {out}, deadline {args.deadline_minutes} min")

    tick = time.monotonic()
    seconds = args.measure_seconds or min(120.0, max(30.0, (deadline - tick) * 0.15))
    measured = run_measure(
        args,
        [f"{args.preset}:{_preset_size(args.preset)}"],
        args.batch_sizes,
        seconds,
        work / "measure.json",
        log,
        store=args.store,
        min_batch=args.min_batch,
        matmul=True,
    )
    results.report["measure"] = measured
    results.report["stages"]["measure_s"] = round(time.monotonic() - tick, 1)
    results.save_report()
    spec = (measured.get("specs") or [{}])[0]
    batch = args.batch_size or spec.get("chosen_batch") or args.min_batch
    flops = spec.get("flops_per_image")
    eager = next((r for r in spec.get("batches", []) if r.get("batch_size") == batch and "step_s" in r), None)
    log(f"training batch {batch}" + (f" ({flops / 1e9:.1f} GFLOP per image per step)" if flops else ""))

    tick = time.monotonic()
    try:
        info = run_pretrain(args, results, log, batch, deadline - hires_reserve, flops)
        info.update(summarize_run(results, batch, flops, args.peak_tflops, eager if info.get("compile") else None))
    except Exception as err:  # keep what was copied; the 256 px stage still runs
        info = {"error": f"{type(err).__name__}: {err}"}
        log(f"pretrain stage failed: {info['error']}")
    results.report["pretrain"] = info
    results.report["stages"]["pretrain_s"] = round(time.monotonic() - tick, 1)
    results.save_report()

    left = deadline - time.monotonic()
    if args.hires and left >= args.hires_min_seconds:
        tick = time.monotonic()
        results.report["hires"] = run_measure(
            args,
            args.hires,
            args.hires_batch_sizes,
            min(args.hires_seconds, left - 10),
            work / "hires.json",
            log,
            store=None,
            min_batch=1,
            matmul=False,
        )
        results.report["stages"]["hires_s"] = round(time.monotonic() - tick, 1)
    elif args.hires:
        log(f"256 px stage skipped: {left:.0f} s left")
    results.report["stages"]["total_s"] = round(time.monotonic() - start, 1)
    results.enforce_limits()
    results.save_report()
    results.enforce_limits()
    log(f"done in {results.report['stages']['total_s']} s: {results.report['out']}")
    return 0


def _preset_size(preset: str) -> int:
    from smp_diffusion_encoder.models.config import resolve_config

    return resolve_config(preset).image_size


if __name__ == "__main__":
    sys.exit(main())
