"""Whole fine-tuned smp models: save/load locally and from the (fake) Hub in a fresh process, no re-download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch

from smp_diffusion_encoder.errors import WeightsError
from smp_diffusion_encoder.formats import load_finetuned, save_finetuned
from smp_diffusion_encoder.hub import push_folder
from smp_diffusion_encoder.registry import register_hub_weights
from tests.hub.fake_hub import FakeHub
from tests.hub.hub_helpers import folder_files, run_python

ENC_REPO = "org/ddpm-ct-tiny"
X = "torch.linspace(-1, 1, 64 * 64).reshape(1, 1, 64, 64)"


def _finetuned(hub: FakeHub, tiny_weights) -> torch.nn.Module:
    """An Unet whose encoder came from Hub weights ("mykey"), then 'fine-tuned' (perturbed); use with the
    ``registry_snapshot`` fixture."""
    sha = hub.commit(ENC_REPO, folder_files(tiny_weights[0]))
    register_hub_weights("ddpm-ct-tiny", ENC_REPO, revision=sha, key="mykey")
    torch.manual_seed(0)
    model = smp.Unet("ddpm-ct-tiny", encoder_weights="mykey", in_channels=1, classes=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model.eval()


def test_local_round_trip(
    hub_online: FakeHub,
    tiny_weights,
    registry_snapshot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = _finetuned(hub_online, tiny_weights)
    x = eval(X)
    save_finetuned(model, tmp_path / "ft")
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["encoder_weights"] is None
    assert model.config["encoder_weights"] == "mykey"  # the live model is untouched
    assert not list((tmp_path / "ft").glob(".*"))
    n = len(hub_online.requests)
    with torch.no_grad():
        capsys.readouterr()
        assert torch.equal(load_finetuned(tmp_path / "ft")(x), model(x))
        assert capsys.readouterr().out == ""  # no "Loading weights from local directory" (smp.from_pretrained's print)
        # the documented equivalent for folders saved by plain save_pretrained
        model.save_pretrained(tmp_path / "plain")
        assert json.loads((tmp_path / "plain" / "config.json").read_text())["encoder_weights"] == "mykey"
        assert torch.equal(smp.from_pretrained(str(tmp_path / "plain"), encoder_weights=None)(x), model(x))
    assert len(hub_online.requests) == n


def test_from_hub_in_a_fresh_process_without_re_downloading_encoder_weights(
    hub_online: FakeHub, tiny_weights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _finetuned(hub_online, tiny_weights)
    save_finetuned(model, tmp_path / "ft")
    sha = push_folder(tmp_path / "ft", "org/flare-unet")
    with torch.no_grad():
        torch.save(model(eval(X)), tmp_path / "expected.pt")  # our own file, written by this test
    hub_online.requests.clear()
    code = f"""
import torch, smp_diffusion_encoder
from smp_diffusion_encoder.formats import load_finetuned
model = load_finetuned("org/flare-unet", revision="{sha}")
with torch.no_grad():
    y = model({X})
print(torch.equal(y, torch.load({str(tmp_path / "expected.pt")!r})))
"""
    env = {"HF_ENDPOINT": hub_online.url, "HF_HOME": str(tmp_path / "fresh-hf"), "HF_HUB_OFFLINE": "0"}
    assert run_python(code, env).strip().splitlines()[-1] == "True"
    assert hub_online.count(ENC_REPO) == 0  # encoder weights were not fetched again
    assert sorted(hub_online.requests) == sorted(
        [
            (m, f"/org/flare-unet/resolve/{sha}/{f}")
            for m in ("HEAD", "GET")
            for f in ("config.json", "model.safetensors")
        ]
    )


def test_pickle_only_whole_model_is_refused(hub_online: FakeHub, tmp_path: Path) -> None:
    hub_online.commit("org/pickled-unet", {"config.json": b'{"_model_class": "Unet"}', "pytorch_model.bin": b"\x80"})
    with pytest.raises(WeightsError, match="only pickle-based weights"):
        load_finetuned("org/pickled-unet")
    (tmp_path / "config.json").write_text('{"_model_class": "Unet"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(WeightsError, match="only pickle-based weights"):
        load_finetuned(tmp_path)


def test_names_that_moved_to_formats_still_work_from_hub() -> None:
    import smp_diffusion_encoder.formats as formats
    import smp_diffusion_encoder.hub as hub

    for name in ("save_finetuned", "load_finetuned", "save_encoder_weights", "load_encoder_weights", "export_encoder"):
        with pytest.warns(DeprecationWarning, match=f"formats.{name}"):
            assert getattr(hub, name) is getattr(formats, name)


def test_saved_model_files_respect_the_umask(tmp_path: Path) -> None:
    """safetensors writes model.safetensors 0600 through its own temporary; the folder's files must all be 0644."""
    import os
    import stat

    import smp_diffusion_encoder  # noqa: F401  (registers ddpm-ct-tiny)

    model = smp.Unet(
        "ddpm-ct-tiny", encoder_weights=None, in_channels=1, classes=3, encoder_depth=3, decoder_channels=(32, 16, 8)
    )
    old = os.umask(0o022)
    try:
        save_finetuned(model, tmp_path / "m")
    finally:
        os.umask(old)
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in (tmp_path / "m").iterdir()}
    assert modes and set(modes.values()) == {"0o644"}, modes
