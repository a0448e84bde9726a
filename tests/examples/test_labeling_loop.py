"""The labeling-loop walk-through (examples/labeling_loop.sh) runs end to end on the shipped demo data, as the README
shows it (a tiny encoder and few steps instead of the default recipe)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_walkthrough_runs_end_to_end(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
        "SMP_DIFFUSION": f"{sys.executable} -m smp_diffusion_encoder.cli.main",
        "FINETUNE_OPTIONS": "--encoder ddpm-ct-tiny --encoder-weights none --steps 2 --batch-size 2 "
        "--augment-views 2 --device cpu",
    }
    done = subprocess.run(
        ["bash", str(ROOT / "examples/labeling_loop.sh"), str(tmp_path / "work")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    work = tmp_path / "work"
    first = json.loads((work / "round1" / "split.json").read_text())["train"]
    second = json.loads((work / "round2" / "split.json").read_text())["train"]
    with open(work / "suggest1" / "suggestions.csv", newline="") as fh:
        suggested = [("REALCT_Tr_0001", int(r["z"])) for r in csv.DictReader(fh)]
    assert len(first) == 4 and len(suggested) == 4 and not set(map(tuple, first)) & set(suggested)
    assert {tuple(p) for p in second} == {tuple(p) for p in first} | set(suggested)  # exactly the labeled slices
    assert (work / "suggest1" / "contact_sheet.png").is_file() and (work / "round2" / "other.csv").is_file()
    assert "labeled 4 slices of REALCT_Tr_0001" in done.stdout and "labeled 8 slices" in done.stdout
