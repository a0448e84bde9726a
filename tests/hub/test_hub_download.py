"""Downloads from a real loopback HTTP server speaking the Hub protocol: cache, pins, 404s, faults, offline."""

from __future__ import annotations

import time
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants

from smp_diffusion_encoder.errors import WeightsError
from smp_diffusion_encoder.hub import load_encoder_weights
from tests.hub.fake_hub import FakeHub
from tests.hub.hub_helpers import folder_files

REPO = "org/ddpm-ct-tiny"


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_download_then_pinned_cache_hit_makes_zero_requests(hub_online: FakeHub, tiny_weights) -> None:
    folder, expected = tiny_weights
    sha = hub_online.commit(REPO, folder_files(folder))
    sd, cfg = load_encoder_weights(REPO, revision=sha)
    assert _same(sd, expected) and cfg["architecture"] == "ddpm_ct_unet_tiny"
    assert hub_online.count("/resolve/", "GET") == 2 and hub_online.count(".bin") == 0
    before = len(hub_online.requests)
    sd2, _ = load_encoder_weights(REPO, revision=sha)
    assert len(hub_online.requests) == before and _same(sd2, expected)


def test_pinned_revision_keeps_old_weights_after_new_commit(hub_online: FakeHub, tiny_weights, tmp_path: Path) -> None:
    from tests.hub.hub_helpers import write_tiny_weights

    folder, old = tiny_weights
    sha_old = hub_online.commit(REPO, folder_files(folder))
    new = write_tiny_weights(tmp_path / "new", seed=1)
    sha_new = hub_online.commit(REPO, folder_files(tmp_path / "new"))
    assert _same(load_encoder_weights(REPO, revision=sha_old)[0], old)
    assert _same(load_encoder_weights(REPO)[0], new)  # main moved on
    assert _same(load_encoder_weights(REPO, revision=sha_new)[0], new)


def test_missing_repo_file_and_revision(hub_online: FakeHub, tiny_weights) -> None:
    folder, _ = tiny_weights
    files = folder_files(folder)
    hub_online.commit("org/no-config", {"model.safetensors": files["model.safetensors"]})
    with pytest.raises(WeightsError, match="org/missing.*not found"):
        load_encoder_weights("org/missing")
    with pytest.raises(WeightsError, match="org/no-config@main/config.json: the repository has no file"):
        load_encoder_weights("org/no-config")
    with pytest.raises(WeightsError, match="does not exist"):
        load_encoder_weights("org/no-config", revision="f" * 40)


def test_pickle_only_repo_is_refused_without_fetching_the_pickle(hub_online: FakeHub, tiny_weights) -> None:
    folder, _ = tiny_weights
    hub_online.commit(
        "org/pickled",
        {"config.json": folder_files(folder)["config.json"], "pytorch_model.bin": b"\x80\x04not-really-a-pickle"},
    )
    with pytest.raises(WeightsError, match=r"only pickle-based weights \['pytorch_model.bin'\], which are refused"):
        load_encoder_weights("org/pickled")
    assert hub_online.count("pytorch_model.bin", "GET") == 0 or all(
        "/resolve/" not in p for m, p in hub_online.requests if "pytorch_model.bin" in p
    )


def test_timm_hub_path_refuses_pickle_only_repo(hub_online: FakeHub, tiny_weights) -> None:
    import timm

    folder, _ = tiny_weights
    hub_online.commit(
        "org/pickled",
        {"config.json": folder_files(folder)["config.json"], "pytorch_model.bin": b"\x80\x04not-really-a-pickle"},
    )
    with pytest.raises(WeightsError, match="only pickle-based weights"):
        timm.create_model("hf-hub:org/pickled", pretrained=True)
    assert not any("/resolve/" in p and p.endswith(".bin") for _, p in hub_online.requests)


@pytest.mark.parametrize("fault", ["wrong_bytes", "short"])
def test_corrupted_download_raises_and_leaves_no_usable_copy(hub_online: FakeHub, tiny_weights, fault: str) -> None:
    folder, expected = tiny_weights
    hub_online.commit(REPO, folder_files(folder))
    hub_online.faults[(REPO, "model.safetensors")] = fault
    with pytest.raises(WeightsError, match="model.safetensors"):
        load_encoder_weights(REPO)
    del hub_online.faults[(REPO, "model.safetensors")]
    assert _same(load_encoder_weights(REPO)[0], expected)  # a retry re-downloads cleanly


@pytest.mark.slow
def test_server_going_away_mid_download(hub_online: FakeHub, tiny_weights) -> None:
    folder, _ = tiny_weights
    hub_online.commit(REPO, folder_files(folder))
    hub_online.faults[(REPO, "model.safetensors")] = "die"
    t0 = time.monotonic()
    with pytest.raises(WeightsError, match=f"{REPO}@main/model.safetensors"):
        load_encoder_weights(REPO)
    assert time.monotonic() - t0 < 20  # huggingface_hub retries 5 x 1 s, then gives up


def test_offline_with_warm_cache_loads(hub_online: FakeHub, tiny_weights, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, expected = tiny_weights
    sha = hub_online.commit(REPO, folder_files(folder))
    load_encoder_weights(REPO, revision=sha)
    load_encoder_weights(REPO)  # also caches refs/main
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    n = len(hub_online.requests)
    assert _same(load_encoder_weights(REPO, revision=sha)[0], expected)
    assert _same(load_encoder_weights(REPO)[0], expected)
    assert len(hub_online.requests) == n


def test_offline_without_cache_fails_fast_and_clearly(hub_online: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    t0 = time.monotonic()
    with pytest.raises(WeightsError) as err:
        load_encoder_weights(REPO, revision="a" * 40)
    assert time.monotonic() - t0 < 2
    msg = str(err.value)
    assert REPO in msg and "HF_HUB_OFFLINE=1" in msg and "Run once online" in msg and "hf download" in msg
    assert hub_online.requests == []


def test_offline_timm_hf_hub_names_the_repo_and_the_command_like_our_paths(
    hub_online: FakeHub, tiny_weights, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the README says about ``HF_HUB_OFFLINE=1`` with an empty cache: timm's ``hf-hub:`` path (which reads
    ``config.json`` before any model code runs) and our paths (``load_encoder_weights``) raise a ``WeightsError``
    naming the repo, the revision and the ``hf download`` command; it is still huggingface_hub's
    ``LocalEntryNotFoundError`` for code that catches that. With the cache filled, timm loads with no request."""
    import timm
    from huggingface_hub.errors import LocalEntryNotFoundError

    from smp_diffusion_encoder.hub.download import NotCachedError

    folder, expected = tiny_weights
    sha = hub_online.commit(REPO, folder_files(folder))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for name in (f"hf-hub:{REPO}@{sha}", f"hf-hub:{REPO}"):
        with pytest.raises(WeightsError) as err:
            timm.create_model(name, pretrained=True, features_only=True)
        assert isinstance(err.value, NotCachedError) and isinstance(err.value, LocalEntryNotFoundError)
        msg = str(err.value)
        assert f"{REPO}@{sha if '@' in name else 'main'}/config.json" in msg and "HF_HUB_OFFLINE=1" in msg
        assert (f"`hf download {REPO} --revision {sha}`" if "@" in name else f"`hf download {REPO}`") in msg
    with pytest.raises(WeightsError, match=REPO):
        load_encoder_weights(REPO, revision="a" * 40)
    with pytest.raises(LocalEntryNotFoundError):  # huggingface_hub's own type, as before
        timm.create_model(f"hf-hub:{REPO}@{sha}", pretrained=True)
    assert hub_online.requests == []

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # what `hf download REPO --revision SHA` does
    huggingface_hub.snapshot_download(REPO, revision=sha)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    n = len(hub_online.requests)
    model = timm.create_model(f"hf-hub:{REPO}@{sha}", pretrained=True, features_only=True)
    assert len(hub_online.requests) == n
    assert torch.equal(
        model.state_dict()["model.unet.input_blocks.0.0.weight"], expected["unet.input_blocks.0.0.weight"]
    )
