"""Start-up cost of the command line and of the package import: wall time and peak memory of fresh processes.

Each command runs ``--repeats`` times in a fresh interpreter, alternating with the others so load changes hit
all alike; the table gives the median wall time and the median peak resident memory (``ru_maxrss`` of the
child), and the ratio to ``import torch`` measured in the same run (what every command paid before the
redesign: the first release imported torch, smp and timm for ``--help``).

    python benchmarks/startup.py            # appends to benchmarks/results/startup.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "python -c pass (interpreter)": [sys.executable, "-c", "pass"],
    "smp-diffusion --help": [sys.executable, "-m", "smp_diffusion_encoder.cli.main", "--help"],
    "smp-diffusion finetune --help": [sys.executable, "-m", "smp_diffusion_encoder.cli.main", "finetune", "--help"],
    "smp-diffusion predict (argument error)": [sys.executable, "-m", "smp_diffusion_encoder.cli.main", "predict"],
    "import smp_diffusion_encoder": [sys.executable, "-c", "import smp_diffusion_encoder"],
    "import torch (reference)": [sys.executable, "-c", "import torch"],
    "import smp_diffusion_encoder, segmentation_models_pytorch": [
        sys.executable,
        "-c",
        "import smp_diffusion_encoder, segmentation_models_pytorch",
    ],
}


def run_once(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one fresh process (``os.wait4`` reports that child's own usage)."""
    tick = time.perf_counter()
    child = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    _, _, usage = os.wait4(child.pid, 0)
    child.returncode = 0  # reaped above
    return time.perf_counter() - tick, usage.ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.md")
    args = p.parse_args()
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    memory: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            seconds, peak = run_once(argv)
            times[name].append(seconds)
            memory[name].append(peak)
    # only now import what imports torch: a child's peak memory counts its parent's from before the exec
    sys.path.insert(0, str(ROOT))
    from benchmarks._machine import append_result, describe_machine, today

    ref = statistics.median(times["import torch (reference)"])
    rows = [
        f"| `{name}` | {statistics.median(t):.2f} s | {statistics.median(t) / ref:.2f} | "
        f"{statistics.median(memory[name]):.0f} MB |"
        for name, t in times.items()
    ]
    text = f"""
## {today()}

- Machine: {describe_machine("cpu")}; load average at start {os.getloadavg()[0]:.1f}
- Command: `python benchmarks/startup.py --repeats {args.repeats}`
- Median wall time of {args.repeats} fresh processes (alternating); time relative to `import torch`; median peak
  resident memory of the process.

| command | wall time | / import torch | peak memory |
| --- | --- | --- | --- |
{chr(10).join(rows)}
"""
    print(text)
    append_result(args.out, "Start-up time of the command line and the package import", text)


if __name__ == "__main__":
    main()
