"""Feature selection: the greedy search picks what scores best, and the weights folder it writes loads in smp,
timm and fine-tuning under a name of the user's choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import timm
import torch

from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.finetune import selection
from smp_diffusion_encoder.finetune.selection import select_features
from smp_diffusion_encoder.finetune.selection_config import SelectionConfig
from smp_diffusion_encoder.registry import register_encoder_from_folder


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("phantom"), n_labeled=1, n_unlabeled=0, shape=(16, 64, 64))


def test_search_keeps_what_scores_better(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A made-up score that prefers timesteps 25 and 400 and block 2 at its stride: the search finds them."""

    def fake_score(acts, timesteps, blocks, strides, train, val, config, device):
        return 0.1 * (25 in timesteps) + 0.05 * (400 in timesteps) + 0.02 * (2 in blocks) - 0.01 * len(timesteps)

    monkeypatch.setattr(selection, "_probe_score", fake_score)
    config = SelectionConfig(encoder="ddpm-ct-tiny", encoder_weights=None, timesteps=(25, 100, 400), steps=1)
    result = select_features(root, config, out_dir=tmp_path / "w")
    assert result.features.timesteps == (25, 400) and 2 in (result.features.blocks or ())
    assert result.score == pytest.approx(0.1 + 0.05 + 0.02 - 0.02) and result.baseline < result.score
    saved = json.loads((tmp_path / "w" / "selection.json").read_text())
    assert saved["chosen"]["timesteps"] == [25, 400] and len(saved["trials"]) == len(result.trials) > 5


def test_written_folder_loads_in_smp_timm_and_finetune(
    root: Path, tmp_path: Path, registry_snapshot, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "weights"
    assert (
        main(
            [
                "select-features",
                str(root),
                "--out",
                str(out),
                "--encoder",
                "ddpm-ct-tiny",
                "--encoder-weights",
                "none",
                "--timesteps",
                "50",
                "250",
                "--steps",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "chosen: timesteps" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    chosen = config["model_args"]["features"]
    assert config["smp_encoder"] is None and chosen["blocks"]  # a selection of its own: registered by name
    register_encoder_from_folder("ddpm-ct-tiny-selected", out)
    model = smp.Unet("ddpm-ct-tiny-selected", encoder_weights="ct", in_channels=1, classes=3)
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 3, 64, 64)
    assert len(model.encoder.features.timesteps) == len(chosen["timesteps"])
    features = timm.create_model(f"local-dir:{out}", pretrained=True, features_only=True)
    assert features.feature_info.reduction() == [1, 2, 4, 8, 16, 32]
    run = tmp_path / "ft"
    assert (
        main(
            [
                "finetune",
                str(root),
                "--method",
                "probe",
                "--encoder",
                "ddpm-ct-tiny-selected",
                "--steps",
                "2",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
