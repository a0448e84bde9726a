"""scripts/ship_default_weights.py: a run becomes a packaged weights folder that smp loads by default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from smp_diffusion_encoder.hub.export import export_encoder
from tests.training.run_helpers import write_run

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "ship_default_weights.py"


def test_run_becomes_default_weights_with_card_and_figures(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run, ema=False, checkpoint=True)
    # a row after the shipped step (the run went on): the card's loss is the loss up to the shipped weights
    (run / "metrics.csv").write_text("step,loss\n10,0.5\n20,0.25\n5000,9.0\n")
    (run / "loss.png").write_bytes(b"\x89PNG fake")
    fp32 = export_encoder(run, tmp_path / "fp32", variant="ddpm-ct-tiny")
    size = (fp32 / "model.safetensors").stat().st_size
    root = tmp_path / "packaged"
    (tmp_path / "data.md").write_text("- two phantom volumes (CC0)\n")
    (tmp_path / "curve.md").write_text("| step | DSC |\n| --- | --- |\n| 0 | 0.1 |\n")
    (tmp_path / "curve.png").write_bytes(b"\x89PNG curve")
    cmd = [
        sys.executable,
        str(SCRIPT),
        str(run),
        "--variant",
        "ddpm-ct-tiny",
        "--out",
        str(root / "ddpm-ct-tiny"),
        "--data-file",
        str(tmp_path / "data.md"),
        "--command",
        "smp-diffusion prepare-slices V store",
        "--command",
        "smp-diffusion pretrain X --steps 1234",
        "--curve",
        str(tmp_path / "curve.png"),
        "--curve-table",
        str(tmp_path / "curve.md"),
        "--max-mb",
        str(0.75 * size / 2**20),
        "--samples",
        "2",
        "--sample-steps",
        "2",
    ]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = root / "ddpm-ct-tiny"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "compute_curve.png",
        "config.json",
        "loss.png",
        "model.safetensors",
        "samples.png",
    ]
    half = load_file(str(folder / "model.safetensors"))
    full = load_file(str(fp32 / "model.safetensors"))
    assert half.keys() == full.keys() and all(v.dtype == torch.float16 for v in half.values())
    assert all(torch.equal(full[k].half(), v) for k, v in half.items())
    card = (folder / "README.md").read_text()
    for text in (
        "two phantom volumes (CC0)",
        "1. `smp-diffusion prepare-slices V store`",
        "2. `smp-diffusion pretrain X --steps 1234`",
        "Optimizer steps: 1234",
        "0.3750",
        "float16",
        "![samples](samples.png)",
        "![loss curve](loss.png)",
        "| 0 | 0.1 |",
        "![compute curve](compute_curve.png)",
    ):
        assert text in card, text
    assert str(tmp_path) not in card
    assert (folder / "samples.png").read_bytes()[:4] == b"\x89PNG"

    check = (
        "import json, torch, segmentation_models_pytorch as smp, smp_diffusion_encoder\n"
        "m = smp.Unet('ddpm-ct-tiny', in_channels=1, classes=14)\n"
        f"from safetensors.torch import load_file; ref = load_file({str(folder / 'model.safetensors')!r})\n"
        "sd = m.encoder.state_dict()\n"
        "print(json.dumps(all(torch.equal(sd[k], v.float()) for k, v in ref.items())))\n"
    )
    env["SMP_DIFFUSION_WEIGHTS_DIR"] = str(root)
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) is True


def test_a_card_naming_an_absolute_path_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run, ema=False, checkpoint=True)
    (run / "metrics.csv").write_text("step,loss\n10,0.5\n")
    (run / "loss.png").write_bytes(b"\x89PNG fake")
    out = tmp_path / "packaged" / "ddpm-ct-tiny"
    cmd = [
        sys.executable,
        str(SCRIPT),
        str(run),
        "--variant",
        "ddpm-ct-tiny",
        "--out",
        str(out),
        "--data",
        "slices of /work/runs/store128",
        "--command",
        "smp-diffusion pretrain store",
        "--samples",
        "1",
        "--sample-steps",
        "1",
    ]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode != 0 and "/work/runs/store128" in proc.stderr and "absolute paths" in proc.stderr
    assert not out.exists()
