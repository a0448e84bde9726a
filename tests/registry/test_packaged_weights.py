"""Packaged default weights: registered by name on import (nothing read or written), seeded into the HF cache
the first time smp asks for them, loaded offline by smp's and timm's own code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import constants

from smp_diffusion_encoder.encoder import EncoderSpec, FeatureConfig
from smp_diffusion_encoder.errors import WeightsError
from smp_diffusion_encoder.hub.packaged import FALLBACK_CACHE_ENV, seed_packaged_weights
from smp_diffusion_encoder.hub.weights import hash_folder
from smp_diffusion_encoder.registry.records import WEIGHTS_DIR_ENV
from tests.hub.hub_helpers import run_python, write_tiny_weights

TINY = EncoderSpec("tiny", FeatureConfig())

SCRIPT = """
import json, os, torch
from safetensors.torch import load_file
home = {home!r}
def files():
    return sorted(str(p) for p in __import__("pathlib").Path(home).rglob("*") if p.is_file())
import smp_diffusion_encoder, timm, segmentation_models_pytorch as smp
after_import = files()
from smp_diffusion_encoder.registry.smp_names import write_all
write_all()  # idempotent: a second registration changes nothing
after_register = files()
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
settings = smp.encoders.encoders["ddpm-ct-tiny"]["pretrained_settings"]
print(json.dumps({{
    "after_import": after_import, "after_register": after_register,
    "smp": all(torch.equal(sd[k], v) for k, v in expected.items()) and sd.keys() == expected.keys(),
    "timm": all(torch.equal(tsd["model." + k], v) for k, v in expected.items()),
    "ct_settings": dict(settings["ct"]), "alias": settings["ct"] is settings["imagenet"],
    "prep": smp.encoders.get_preprocessing_params("ddpm-ct-tiny"),
    "small": small,
}}))
"""


def test_import_writes_nothing_and_default_weights_load_offline(tmp_path: Path) -> None:
    root = tmp_path / "packaged"
    write_tiny_weights(root / "ddpm-ct-tiny", seed=3)
    home = tmp_path / "hf-home"
    home.mkdir()
    env = {WEIGHTS_DIR_ENV: str(root), "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    script = SCRIPT.format(home=str(home), weights=str(root / "ddpm-ct-tiny" / "model.safetensors"))
    out = json.loads(run_python(script, env).splitlines()[-1])
    assert out["after_import"] == [] and out["after_register"] == []  # registering names touches no file
    assert out["smp"] and out["timm"] and out["small"] == "KeyError" and out["alias"]
    assert out["ct_settings"] == {
        "repo_id": "smp-diffusion/ddpm-ct-tiny",
        "revision": hash_folder(root / "ddpm-ct-tiny"),
    }
    assert out["prep"] == {"input_space": "RGB", "input_range": [0, 1], "mean": [0.5], "std": [0.5]}
    snap = home / "hub" / "models--smp-diffusion--ddpm-ct-tiny" / "snapshots" / out["ct_settings"]["revision"]
    assert sorted(p.name for p in snap.iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_seeding_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "packaged" / "ddpm-ct-tiny"
    write_tiny_weights(folder)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    first = seed_packaged_weights(folder, "smp-diffusion/ddpm-ct-tiny", TINY)
    snap = next((tmp_path / "cache").rglob("model.safetensors"))
    mtime = snap.stat().st_mtime_ns
    assert seed_packaged_weights(folder, "smp-diffusion/ddpm-ct-tiny", TINY) == first == hash_folder(folder)
    assert snap.stat().st_mtime_ns == mtime


def test_unwritable_hf_cache_falls_back_to_our_cache_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "packaged" / "ddpm-ct-tiny"
    write_tiny_weights(folder)
    (tmp_path / "a-file").write_text("x")  # a cache "directory" below a file can never be created
    monkeypatch.setenv(FALLBACK_CACHE_ENV, str(tmp_path / "ours"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "a-file" / "hub"))
    with pytest.warns(UserWarning, match="not writable.*seeded into .*ours.*HF_HUB_CACHE="):
        revision = seed_packaged_weights(folder, "smp-diffusion/ddpm-ct-tiny", TINY)
    assert (
        tmp_path / "ours" / "models--smp-diffusion--ddpm-ct-tiny" / "snapshots" / revision / "config.json"
    ).is_file()


def test_packaged_weights_of_another_architecture_are_refused_when_used(tmp_path: Path) -> None:
    root = tmp_path / "packaged"
    write_tiny_weights(root / "ddpm-ct-tiny")
    shutil.copytree(root / "ddpm-ct-tiny", root / "ddpm-ct")  # tiny weights under the small variant's name
    code = (
        "import smp_diffusion_encoder, segmentation_models_pytorch as smp\n"
        "from smp_diffusion_encoder.errors import WeightsError\n"
        "try:\n    smp.Unet('ddpm-ct', in_channels=1, classes=3)\nexcept WeightsError as err:\n    print(err)"
    )
    out = run_python(code, {WEIGHTS_DIR_ENV: str(root), "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"})
    assert "do not match their encoder" in out and "unet.model_channels: 8 vs 32" in out.replace("32 vs 8", "8 vs 32")
    with pytest.raises(WeightsError, match="do not match their encoder"):
        seed_packaged_weights(root / "ddpm-ct", "smp-diffusion/ddpm-ct", EncoderSpec("small", FeatureConfig()))


def test_a_local_weights_folder_registers_under_a_name(tmp_path: Path, registry_snapshot, monkeypatch) -> None:
    import segmentation_models_pytorch as smp
    import torch

    from smp_diffusion_encoder.registry import register_encoder_from_folder, resolve
    from smp_diffusion_encoder.registry.weights import preprocessing_for

    folder = tmp_path / "mine"
    expected = write_tiny_weights(folder, seed=5)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    assert register_encoder_from_folder("ddpm-ct-mine", folder) == "ddpm-ct-mine"
    assert resolve("ddpm-ct-mine").default_weights == "ct"
    model = smp.Unet("ddpm-ct-mine", encoder_weights="ct", in_channels=1, classes=2)
    sd = model.encoder.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in expected.items())
    assert preprocessing_for("ddpm-ct-mine", "ct").image_size == 64
    (folder / "config.json").write_text("{}")
    with pytest.raises(WeightsError):
        register_encoder_from_folder("ddpm-ct-broken", folder)
