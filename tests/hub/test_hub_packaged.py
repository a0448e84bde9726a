"""Packaged default weights: seeded into the HF cache, loaded offline by smp's and timm's own code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hub_helpers import run_python, write_tiny_weights
from huggingface_hub import constants

from smp_diffusion_encoder.hub.packaged import (
    FALLBACK_CACHE_ENV,
    WEIGHTS_DIR_ENV,
    packaged_pretrained_settings,
    packaged_timm_cfg,
)
from smp_diffusion_encoder.hub.weights import hash_folder

SCRIPT = """
import json, torch, timm, segmentation_models_pytorch as smp
from safetensors.torch import load_file
import smp_diffusion_encoder
from smp_diffusion_encoder.encoder import register_all
register_all()  # idempotent: a second registration changes nothing
expected = load_file({weights!r})
model = smp.Unet("ddpm-ct-tiny", in_channels=1, classes=3)  # default encoder_weights="imagenet" -> "ct"
sd = model.encoder.state_dict()
tm = timm.create_model("ddpm_ct_unet_tiny", pretrained=True, features_only=True)
tsd = tm.state_dict()
try:
    smp.Unet("ddpm-ct", in_channels=1, classes=3)
    small = "loaded"
except KeyError as err:
    small = "KeyError"
print(json.dumps({{
    "smp": all(torch.equal(sd[k], v) for k, v in expected.items()) and sd.keys() == expected.keys(),
    "timm": all(torch.equal(tsd["model." + k], v) for k, v in expected.items()),
    "ct_settings": smp.encoders.encoders["ddpm-ct-tiny"]["pretrained_settings"]["ct"],
    "prep": smp.encoders.get_preprocessing_params("ddpm-ct-tiny"),
    "small": small,
}}))
"""


def test_default_weights_load_offline_with_an_empty_hf_home(tmp_path: Path) -> None:
    root = tmp_path / "packaged"
    write_tiny_weights(root / "ddpm-ct-tiny", seed=3)
    env = {WEIGHTS_DIR_ENV: str(root), "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    out = json.loads(run_python(SCRIPT.format(weights=str(root / "ddpm-ct-tiny" / "model.safetensors")), env).splitlines()[-1])
    assert out["smp"] and out["timm"] and out["small"] == "KeyError"
    assert out["ct_settings"] == {"repo_id": "smp-diffusion/ddpm-ct-tiny", "revision": hash_folder(root / "ddpm-ct-tiny")}
    assert out["prep"] == {"input_space": "RGB", "input_range": [0, 1], "mean": [0.5], "std": [0.5]}
    snap = tmp_path / "hf-home" / "hub" / "models--smp-diffusion--ddpm-ct-tiny" / "snapshots" / out["ct_settings"]["revision"]
    assert sorted(p.name for p in snap.iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_seeding_is_idempotent_and_keys_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "packaged"
    write_tiny_weights(root / "ddpm-ct-tiny")
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(root))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    first = packaged_pretrained_settings("ddpm-ct-tiny")
    snap = next((tmp_path / "cache").rglob("model.safetensors"))
    mtime = snap.stat().st_mtime_ns
    assert packaged_pretrained_settings("ddpm-ct-tiny") == first and snap.stat().st_mtime_ns == mtime
    assert first["ct"] == first["imagenet"] and len(first["ct"]["revision"]) == 40
    assert packaged_timm_cfg("ddpm_ct_unet_tiny") == {"file": str(root / "ddpm-ct-tiny" / "model.safetensors")}
    assert packaged_pretrained_settings("ddpm-ct") == {} and packaged_timm_cfg("ddpm_ct_unet") == {}


def test_unwritable_hf_cache_falls_back_to_our_cache_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "packaged"
    write_tiny_weights(root / "ddpm-ct-tiny")
    (tmp_path / "a-file").write_text("x")  # a cache "directory" below a file can never be created
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(root))
    monkeypatch.setenv(FALLBACK_CACHE_ENV, str(tmp_path / "ours"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "a-file" / "hub"))
    with pytest.warns(UserWarning, match="not writable.*seeded into .*ours.*HF_HUB_CACHE="):
        settings = packaged_pretrained_settings("ddpm-ct-tiny")
    assert (tmp_path / "ours" / "models--smp-diffusion--ddpm-ct-tiny" / "snapshots" / settings["ct"]["revision"]
            / "config.json").is_file()


def test_packaged_weights_of_another_architecture_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "packaged"
    write_tiny_weights(root / "ddpm-ct-tiny")
    shutil.copytree(root / "ddpm-ct-tiny", root / "ddpm-ct")  # tiny weights under the small variant's name
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(root))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="do not match the 'ddpm-ct' variant"):
        assert packaged_pretrained_settings("ddpm-ct") == {}
    assert packaged_timm_cfg("ddpm_ct_unet") == {}
