"""The three documented ways to use Hub weights: timm hf-hub, smp tu-hf-hub, native smp names."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import segmentation_models_pytorch.encoders as smp_encoders
import timm
import torch

from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.hub.weights import WEIGHTS_NAME
from smp_diffusion_encoder.registry import HubWeights, register_encoder_from_hub, register_hub_weights, resolve
from tests.hub.fake_hub import FakeHub
from tests.hub.hub_helpers import folder_files

REPO = "org/ddpm-ct-tiny"


def _assert_loaded(module: torch.nn.Module, expected: dict, prefix: str = "") -> None:
    sd = module.state_dict()
    for k, v in expected.items():
        assert torch.equal(sd[prefix + k], v), k


def test_timm_hf_hub_features_only(hub_online: FakeHub, tiny_weights) -> None:
    folder, expected = tiny_weights
    sha = hub_online.commit(REPO, folder_files(folder))
    model = timm.create_model(f"hf-hub:{REPO}@{sha}", pretrained=True, features_only=True)
    _assert_loaded(model, expected, prefix="model.")
    feats = model(torch.zeros(1, 1, 64, 64))
    assert [f.shape[-1] for f in feats] == [64, 32, 16, 8, 4, 2]
    assert model.pretrained_cfg["hf_hub_filename"] == WEIGHTS_NAME
    assert hub_online.count(".bin") == 0


def test_smp_tu_hf_hub(hub_online: FakeHub, tiny_weights) -> None:
    folder, expected = tiny_weights
    sha = hub_online.commit(REPO, folder_files(folder))
    model = smp.Unet(f"tu-hf-hub:{REPO}@{sha}", encoder_weights=True, in_channels=1, classes=14)
    _assert_loaded(model.encoder.model, expected, prefix="model.")
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 14, 64, 64)


def test_native_name_with_registered_hub_weights(hub_online: FakeHub, tiny_weights, registry_snapshot) -> None:
    folder, expected = tiny_weights
    sha = hub_online.commit(REPO, folder_files(folder))
    assert register_hub_weights("ddpm-ct-tiny", REPO, revision=sha, key="mykey") == HubWeights(REPO, sha)
    assert resolve("ddpm-ct-tiny").weights["mykey"] == HubWeights(REPO, sha)
    n = len(hub_online.requests)
    model = smp.Unet("ddpm-ct-tiny", encoder_weights="mykey", in_channels=1, classes=3)
    assert len(hub_online.requests) == n  # prefetched at registration: smp's own download is a cache hit
    _assert_loaded(model.encoder, expected)
    assert smp.encoders.get_preprocessing_params("ddpm-ct-tiny", "mykey")["mean"] == [0.5]


def test_register_hub_weights_rejects_other_architectures_and_branch_names(
    hub_online: FakeHub, tiny_weights, registry_snapshot
) -> None:
    folder, _ = tiny_weights
    sha = hub_online.commit(REPO, folder_files(folder))
    with pytest.raises(WeightsError, match="different architecture than encoder 'ddpm-ct'.*unet.model_channels"):
        register_hub_weights("ddpm-ct", REPO, revision=sha, key="x")
    with pytest.raises(ConfigError, match="not a 40-hex commit"):
        register_hub_weights("ddpm-ct-tiny", REPO, revision="main", key="x")
    assert "x" not in smp_encoders.encoders["ddpm-ct"]["pretrained_settings"] and "x" not in resolve("ddpm-ct").weights


def test_register_encoder_from_hub_builds_a_new_name(hub_online: FakeHub, tiny_weights, registry_snapshot) -> None:
    folder, expected = tiny_weights
    sha = hub_online.commit(REPO, folder_files(folder))
    assert register_encoder_from_hub("ddpm-ct-flare", REPO, revision=sha) == "ddpm-ct-flare"
    model = smp.FPN("ddpm-ct-flare", encoder_weights="ct", in_channels=1, classes=2)
    _assert_loaded(model.encoder, expected)
