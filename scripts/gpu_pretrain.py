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

OUT (at most 8 files, 16 MiB each, 64 MiB in all, names of letters, digits, ``._-``; checked at the end)::

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
import csv
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from smp_diffusion_encoder._io import atomic_path, atomic_write_json  # noqa: E402  (no torch: light)

MAX_FILES, MAX_FILE, MAX_TOTAL = 8, 16 * 2**20, 64 * 2**20
FIXED_FILES = 4  # throughput.json, log.txt, run/config.json, run/metrics.csv
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
STARTUP_S, COMPILE_S, END_S = 30.0, 60.0, 15.0  # planning allowances of the pretrain stage
LOG_MAX = 64 * 1024
MEASURE_STARTUP_S = 10.0  # a measure subprocess's interpreter, torch and CUDA start-up


class Log:
    """Lines to stdout and to ``OUT/log.txt`` at once; the file keeps its head and its latest lines within
    :data:`LOG_MAX` bytes (four float16 milestones leave OUT about 156 KiB for everything else)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file: TextIO = path.open("a", buffering=1)
        self.start = time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, text: str, *, raw: bool = False) -> None:
        line = text if raw else f"[{time.monotonic() - self.start:6.1f}s] {text}"
        with self.lock:
            print(line, flush=True)
            self.file.write(line + "\n")
            if self.file.tell() > LOG_MAX:
                self.file.close()
                data = self.path.read_bytes()
                self.path.write_bytes(
                    data[: LOG_MAX // 4] + b"\n[... log cut to fit OUT's limits ...]\n" + data[-LOG_MAX // 2 :]
                )
                self.file = self.path.open("a", buffering=1)


def stream(proc: subprocess.Popen[str], log: Log, prefix: str) -> threading.Thread:
    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log(f"{prefix}| {line.rstrip()}", raw=True)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def stop(proc: subprocess.Popen[str], log: Log, why: str) -> None:
    log(f"stopping pid {proc.pid}: {why}")
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def env() -> dict[str, str]:
    e = dict(os.environ, PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return e


def read_rows(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


class Results:
    """What goes under OUT: the run's files (milestones as float16, copied as they appear) and the report."""

    def __init__(self, out: Path, work_run: Path, log: Log, max_milestones: int) -> None:
        self.out, self.work_run, self.log, self.max_milestones = out, work_run, log, max_milestones
        self.passed: set[str] = set()  # milestones not copied (the file limit): said once
        self.report: dict[str, Any] = {"format": "smp_diffusion_encoder.gpu_pretrain", "stages": {}}
        (out / "run" / "milestones").mkdir(parents=True, exist_ok=True)

    def save_report(self) -> None:
        atomic_write_json(self.out / "throughput.json", self.report)

    def copy_run_files(self) -> None:
        for name in ("config.json", "metrics.csv"):
            src = self.work_run / name
            if src.is_file():
                with atomic_path(self.out / "run" / name) as tmp:
                    tmp.write_bytes(src.read_bytes())

    def milestone_files(self) -> list[Path]:
        return sorted((self.out / "run" / "milestones").glob("step-*.safetensors"))

    def add_milestone(self, state: dict[str, Any], metadata: dict[str, str], name: str) -> None:
        import torch
        from safetensors.torch import save_file

        if len(self.milestone_files()) >= self.max_milestones:
            self.log(f"milestone {name} not copied: already {self.max_milestones} (the 8-file limit of OUT)")
            self.passed.add(name)
            return
        half = {
            k: (v.half() if v.is_floating_point() else v).contiguous()
            for k, v in state.items()
            if isinstance(v, torch.Tensor)
        }
        dst = self.out / "run" / "milestones" / name
        with tempfile.TemporaryDirectory() as staging:
            tmp = Path(staging) / name
            save_file(half, str(tmp), metadata={**metadata, "dtype": "float16"})
            if tmp.stat().st_size > MAX_FILE:
                self.log(f"milestone {name} not copied: {tmp.stat().st_size / 2**20:.2f} MiB in float16, over 16")
                return
            with atomic_path(dst) as final:
                final.write_bytes(tmp.read_bytes())
        self.log(
            f"milestone {name} copied ({dst.stat().st_size / 2**20:.2f} MiB, float16, step "
            f"{metadata.get('step')}, clock {float(metadata.get('train_seconds', 'nan')) / 60:.2f} min)"
        )

    def sync_milestones(self) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        have = {p.name for p in self.milestone_files()}
        for src in sorted((self.work_run / "milestones").glob("step-*.safetensors")):
            if src.name not in have and src.name not in self.passed:
                with safe_open(str(src), "pt") as fh:
                    metadata = dict(fh.metadata() or {})
                self.add_milestone(load_file(str(src)), metadata, src.name)

    def final_from_checkpoint(self) -> None:
        """The last checkpoint's EMA weights as a milestone, unless a milestone of that step exists."""
        import torch

        ckpt = self.work_run / "checkpoint.pt"
        if not ckpt.is_file():
            return
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        step = int(state["step"])
        name = f"step-{step:07d}.safetensors"
        if state.get("ema") is None or (self.out / "run" / "milestones" / name).exists():
            return
        seconds = float(state["extra"].get("train_seconds", float("nan")))
        self.add_milestone(
            state["ema"]["module"],
            {"step": str(step), "weights": "ema", "train_seconds": f"{seconds:.3f}", "source": "checkpoint"},
            name,
        )

    def enforce_limits(self) -> None:
        """Trim log.txt until OUT fits the tool's limits; report what is there."""
        files = [p for p in self.out.rglob("*") if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        log_file = self.out / "log.txt"
        if total > MAX_TOTAL or (log_file.is_file() and log_file.stat().st_size > MAX_FILE):
            keep = max(0, min(MAX_FILE, MAX_TOTAL - (total - log_file.stat().st_size)) - 4096)
            data = log_file.read_bytes()
            log_file.write_bytes(b"[log trimmed to its last bytes to fit OUT's limits]\n" + data[-keep:])
        files = [p for p in self.out.rglob("*") if p.is_file()]
        problems = [
            str(p)
            for p in files
            if not all(SAFE_NAME.match(part) for part in p.relative_to(self.out).parts)
            or len(p.relative_to(self.out).parts) > 3
            or p.stat().st_size > MAX_FILE
        ]
        self.report["out"] = {
            "files": len(files),
            "bytes": sum(p.stat().st_size for p in files),
            "problems": problems + ([f"{len(files)} files > {MAX_FILES}"] if len(files) > MAX_FILES else []),
        }


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
