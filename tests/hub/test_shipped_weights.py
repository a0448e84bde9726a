"""The default weights shipped in the package (skipped while a variant ships none)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from smp_diffusion_encoder.registry.records import packaged_weights

_PACKAGED = packaged_weights("ddpm-ct")
SHIPPED = _PACKAGED.folder if _PACKAGED else None
pytestmark = pytest.mark.skipif(SHIPPED is None, reason="no default ddpm-ct weights in the package")


def test_small_enough_to_ship_and_documented() -> None:
    assert SHIPPED is not None
    assert (SHIPPED / "model.safetensors").stat().st_size <= 30 * 2**20
    config = json.loads((SHIPPED / "config.json").read_text())
    assert config["smp_encoder"] == "ddpm-ct" and config["preprocessing"]["image_size"] == 128
    card = (SHIPPED / "README.md").read_text()
    assert "smp-diffusion pretrain" in card and "Optimizer steps:" in card
    assert (SHIPPED / "loss.png").is_file() and (SHIPPED / "samples.png").is_file()


def test_plain_smp_unet_loads_them_offline_with_an_empty_cache(tmp_path: Path) -> None:
    assert SHIPPED is not None
    code = (
        "import json, torch, segmentation_models_pytorch as smp, smp_diffusion_encoder\n"
        "from safetensors.torch import load_file\n"
        "m = smp.Unet(encoder_name='ddpm-ct', in_channels=1, classes=14)  # encoder_weights='imagenet' -> 'ct'\n"
        f"ref = load_file({str(SHIPPED / 'model.safetensors')!r})\n"
        "sd = m.encoder.state_dict()\n"
        "y = m(torch.zeros(2, 1, 256, 256)); y.mean().backward()\n"
        "print(json.dumps([all(torch.equal(sd[k], v.float()) for k, v in ref.items()), list(y.shape)]))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [True, [2, 14, 256, 256]]
