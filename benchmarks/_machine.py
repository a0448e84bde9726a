"""Machine description and result writing shared by the benchmark scripts."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def describe_machine(device: str = "cpu") -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.startswith("cuda") and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def append_result(path: Path, title: str, section: str) -> None:
    """Append ``section`` (markdown) to a results file, starting the file with ``# title`` if it is new."""
    if not path.exists():
        path.write_text(f"# {title}\n")
    with open(path, "a") as fh:
        fh.write(section)
