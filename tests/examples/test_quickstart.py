"""The quickstart example runs end to end (real CT shipped with the package; a tiny encoder and few steps)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "examples/quickstart.py"),
        "--out",
        str(tmp_path),
        "--encoder",
        "ddpm-ct-tiny",
        "--image-size",
        "64",
        "--steps",
        "3",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mean DSC" in done.stdout and "REALCT_Ts_0001 (another scan)" in done.stdout
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("Name,Liver_DSC,RK_DSC")
    assert (tmp_path / "predictions/dicom.nii.gz").is_file()
