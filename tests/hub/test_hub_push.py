"""Push through the real ``HfApi`` client to the loopback fake Hub (create_repo, branch, preupload, commit)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.errors import WeightsError
from smp_diffusion_encoder.hub import load_encoder_weights, push_encoder_weights
from tests.hub.fake_hub import FakeHub
from tests.hub.hub_helpers import folder_files


def test_push_returns_the_commit_sha_and_round_trips(hub_online: FakeHub, tiny_weights) -> None:
    folder, expected = tiny_weights
    sha = push_encoder_weights(folder, "org/pushed", commit_message="tiny weights")
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
    assert hub_online.repos["org/pushed"]["refs"]["main"] == sha
    assert hub_online.repos["org/pushed"]["commits"][sha] == folder_files(folder)
    sd, _ = load_encoder_weights("org/pushed", revision=sha)
    assert sd.keys() == expected.keys()


def test_push_to_branch_leaves_main_alone(hub_online: FakeHub, tiny_weights) -> None:
    folder, _ = tiny_weights
    main_sha = push_encoder_weights(folder, "org/pushed")
    (tmp := folder.parent / "copy").mkdir(exist_ok=True)
    for name, data in folder_files(folder).items():
        (tmp / name).write_bytes(
            data.replace(b"synthetic test data", b"other test data") if name == "README.md" else data
        )
    v1 = push_encoder_weights(tmp, "org/pushed", branch="v1")
    assert v1 != main_sha and hub_online.repos["org/pushed"]["refs"] == {"main": main_sha, "v1": v1}


def test_cli_push_prints_sha(hub_online: FakeHub, tiny_weights, capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = tiny_weights
    assert main(["push", str(folder), "org/cli"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == hub_online.repos["org/cli"]["refs"]["main"] and "CHANGELOG.md" in out[1]


def test_push_refuses_pickle_and_invalid_folders(
    hub_online: FakeHub, tiny_weights, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(WeightsError, match="only pickle-based weights"):
        push_encoder_weights(tmp_path, "org/bad")
    assert main(["push", str(tmp_path), "org/bad", "--whole-model"]) == 2
    assert "error: WeightsError" in capsys.readouterr().err
    assert hub_online.requests == []
