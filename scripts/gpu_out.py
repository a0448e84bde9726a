"""What the GPU pretraining script (``scripts/gpu_pretrain.py``) writes under ``$OUT``, within the device tool's
limits (at most 8 files, 16 MiB each, 64 MiB in all, names of letters, digits, ``._-``; /work/.library/device
README): the log shared with the subprocesses, the run's files copied as they appear, float16 milestones and the
final report. Light on purpose (no torch at import): the stages import it before anything heavy.
"""

from __future__ import annotations

import csv
import os
import re
import signal
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
LOG_MAX = 64 * 1024


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
