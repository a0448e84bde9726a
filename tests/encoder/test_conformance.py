"""The contracts a timm or smp user expects of every model in those libraries, for every registered variant.

Each contract is run on every built-in name that fits a CPU test (``ddpm-ct-adm``'s 553 M parameters do not;
it is built from the same code and its registration is checked). Sources of the contracts: timm's
``tests/test_models.py`` (every parameter used by ``model(x)``, ``reset_classifier(0, "")`` gives the unpooled
map, ``features_only``, torch.fx tracing) and smp's model tests (inputs of any size, e.g. 67 x 71); the host
projects' own tests, restated, are ``test_timm_host_tests.py`` and ``test_smp_host_tests.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torch.fx

import smp_diffusion_encoder  # noqa: F401  (registers the names)
from smp_diffusion_encoder.registry import all_records

RECORDS = [r for r in all_records() if r.spec.unet.model_channels <= 32]  # CPU-sized: tiny and small
SIZE = 64


@pytest.fixture(params=RECORDS, ids=lambda r: r.timm_name)
def record(request):
    return request.param


def test_every_builtin_name_is_registered_with_both_libraries() -> None:
    timm_names = set(timm.list_models("ddpm_ct_unet*"))
    for r in all_records():
        assert r.timm_name in timm_names and r.smp_name in smp.encoders.get_encoder_names()


def test_timm_model_uses_every_parameter_and_features_only_keeps_only_what_it_needs(record) -> None:
    """``model(x)`` reads the trunk's final (stride-1) map, so every block is used; ``features_only`` with coarse
    ``out_indices`` drops the decoder blocks of the finer maps and the classifier (timm's pruning contract)."""
    model = timm.create_model(record.timm_name, num_classes=3)
    model(torch.randn(2, 1, SIZE, SIZE)).mean().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"{len(unused)} parameters get no gradient, e.g. {unused[:3]}"
    coarse = timm.create_model(record.timm_name, features_only=True, out_indices=(3, 4, 5))
    coarse(torch.randn(1, 1, SIZE, SIZE))[0].sum().backward()
    assert not [n for n, p in coarse.named_parameters() if p.grad is None]
    n_model, n_coarse = (sum(p.numel() for p in m.parameters()) for m in (model, coarse))
    assert n_coarse < n_model


def test_unpooled_features_as_in_every_timm_model(record) -> None:
    model = timm.create_model(record.timm_name)
    pool = model.pretrained_cfg["pool_size"]
    expected = (1, model.num_features, *pool)
    x = torch.randn(1, 1, *model.pretrained_cfg["input_size"][1:])
    assert tuple(model.forward_features(x).shape) == expected
    model.reset_classifier(0, "")
    assert tuple(model(x).shape) == expected
    assert tuple(timm.create_model(record.timm_name, num_classes=0, global_pool="")(x).shape) == expected
    model.reset_classifier(4, "avg")
    assert tuple(model(x).shape) == (1, 4)


def test_save_for_hf_with_safetensors_and_load_it_back(record, tmp_path: Path) -> None:
    model = timm.create_model(record.timm_name, num_classes=2).eval()
    timm.models.save_for_hf(model, tmp_path, safe_serialization=True)
    assert (tmp_path / "model.safetensors").is_file() and not (tmp_path / "pytorch_model.bin").exists()
    assert json.loads((tmp_path / "config.json").read_text())["architecture"] == record.timm_name
    again = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(1, 1, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


def test_features_only_and_torch_fx(record) -> None:
    features = timm.create_model(record.timm_name, features_only=True, out_indices=(1, 3, 5))
    assert features.feature_info.reduction() == [2, 8, 32]
    maps = features(torch.randn(1, 1, SIZE, SIZE))
    assert [m.shape[-1] for m in maps] == [SIZE // 2, SIZE // 8, SIZE // 32]
    model = timm.create_model(record.timm_name).eval()
    encoder = smp.encoders.get_encoder(record.smp_name, in_channels=1).eval()
    x = torch.randn(2, 1, 67, 71)
    with torch.no_grad():
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x))
        for a, b in zip(torch.fx.symbolic_trace(encoder)(x), encoder(x)):
            torch.testing.assert_close(a, b)


def test_smp_takes_any_input_size_like_its_own_encoders(record) -> None:
    model = smp.Unet(
        record.smp_name, encoder_weights=None, in_channels=1, classes=3, decoder_channels=(16, 16, 16, 16, 16)
    ).eval()
    x = torch.randn(1, 1, 67, 71)
    with torch.no_grad():
        assert model(x).shape == (1, 3, 67, 71)
    ours = smp.encoders.get_encoder(record.smp_name, in_channels=1)(x)
    native = smp.encoders.get_encoder("resnet18", in_channels=1, weights=None)(x)
    assert [f.shape[-2:] for f in ours] == [f.shape[-2:] for f in native]  # same pyramid sizes as a CNN
    for arch in ("FPN", "UnetPlusPlus"):  # architectures smp itself requires divisible sizes for
        with pytest.raises(RuntimeError, match="Wrong input shape height=67, width=71"):
            getattr(smp, arch)(record.smp_name, encoder_weights=None, in_channels=1)(x)


def test_padding_does_not_change_features_of_divisible_inputs() -> None:
    encoder = smp.encoders.get_encoder("ddpm-ct-tiny", in_channels=1).eval()
    x = torch.randn(1, 1, 64, 96)
    padded = torch.nn.functional.pad(x, (0, 0, 0, 0))
    with torch.no_grad():
        for a, b in zip(encoder(x), encoder(padded)):
            torch.testing.assert_close(a, b)
        # a 60 x 90 crop is padded with air (-1) inside: its features are those of the air-padded 64 x 96 image
        crop = x[..., :60, :90]
        air = torch.nn.functional.pad(crop, (0, 6, 0, 4), value=-1.0)
        for a, b, s in zip(encoder(crop), encoder(air), (1, 2, 4, 8, 16, 32)):
            torch.testing.assert_close(a, b[..., : -(-60 // s), : -(-90 // s)])
