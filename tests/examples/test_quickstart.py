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
    assert "on REALCT_Ts_0001 (another scan): DSC" in done.stdout
    assert "mean over organs present in the ground truth" in done.stdout and "FLARE mean over 13 organs" in done.stdout
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("Name,Liver_DSC,RK_DSC")
    assert (tmp_path / "predictions/REALCT_Ts_0001.nii.gz").is_file()  # named after the case, not its dicom/ folder
