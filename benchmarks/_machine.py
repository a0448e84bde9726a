"""Machine description and result writing shared by the benchmark scripts."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from smp_diffusion_encoder._device import describe_machine

__all__ = ["RESULTS", "ROOT", "append_result", "describe_machine", "today"]

#: The repository root: benchmarks run from there as modules (``python -m benchmarks.NAME``).
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def append_result(path: Path, title: str, section: str) -> None:
    """Append ``section`` (markdown) to a results file, starting the file with ``# title`` if it is new."""
    if not path.exists():
        path.write_text(f"# {title}\n")
    with open(path, "a") as fh:
        fh.write(section)
