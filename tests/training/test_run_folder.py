"""Reading a pretraining run folder: weights preference, unwrapped keys, named errors, milestones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.training.run_folder import hours_at, load_run, read_run_config, training_hours
from tests.training.run_helpers import write_run


def test_run_folder_prefers_ema_and_checkpoint_keys_are_unwrapped(tmp_path: Path) -> None:
    sd = write_run(tmp_path / "r", ema=False, checkpoint=True)
    ema = load_run(tmp_path / "r")
    assert ema.weights_kind == "ema" and ema.step == 1234 and ema.weights_file.name == "checkpoint.pt"
    raw = load_run(tmp_path / "r", use_ema=False)
    assert raw.weights_kind == "model" and set(raw.state_dict) == set(sd)  # "module." stripped
    assert torch.equal(raw.state_dict["time_embed.0.weight"], sd["time_embed.0.weight"] + 1)
    net = ema.build_unet()
    assert torch.equal(net.state_dict()["out.2.bias"], sd["out.2.bias"])


def test_missing_weights_and_config_are_named(tmp_path: Path, tiny_run: tuple[Path, dict]) -> None:
    write_run(tmp_path / "r", ema=False)
    with pytest.raises(
        WeightsError,
        match=r"no ema or model weights: looked for \['ema.safetensors', 'model.safetensors'\] "
        r"and \['checkpoint.pt', 'checkpoints/last.pt'\]",
    ):
        load_run(tmp_path / "r")
    with pytest.raises(WeightsError, match="no model weights"):
        load_run(tiny_run[0], use_ema=False)
    (tmp_path / "r" / "config.json").write_text(json.dumps({"unet": {}}))
    with pytest.raises(
        ConfigError, match=r"lacks \['schedule', 'preprocessing'\].*expected keys unet, schedule, preprocess"
    ):
        load_run(tmp_path / "r")


def test_plain_safetensors_file_with_config_beside_it(tiny_run: tuple[Path, dict]) -> None:
    folder, sd = tiny_run
    info = load_run(folder / "ema.safetensors")
    assert info.unet_config.image_size == 64 and info.schedule.num_timesteps == 1000
    assert all(torch.equal(info.state_dict[k], sd[k]) for k in sd)


def test_checkpoint_under_checkpoints_last_pt(tmp_path: Path) -> None:
    sd = write_run(tmp_path / "r", ema=False, checkpoint=True)
    (tmp_path / "r" / "checkpoints").mkdir()
    (tmp_path / "r" / "checkpoint.pt").rename(tmp_path / "r" / "checkpoints" / "last.pt")
    info = load_run(tmp_path / "r", use_ema=True)
    assert info.weights_file.name == "last.pt" and torch.equal(info.state_dict["out.2.bias"], sd["out.2.bias"])


def test_training_hours_sum_logged_windows_and_skip_windows_logged_again(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run)
    with pytest.raises(ConfigError, match="no pretraining batch size"):
        training_hours(run)
    config = read_run_config(run / "config.json")
    batch = 8
    (run / "config.json").write_text(json.dumps({**config, "pretrain": {"batch_size": batch}}))
    # windows of 10 steps at 2 and then 1 image/s; the run was resumed from step 10 and logged step 20 again
    rows = [(10, 2.0), (20, 1.0), (20, 1.0), (30, 1.0)]
    (run / "metrics.csv").write_text("step,loss,images_per_s\n" + "".join(f"{s},0.5,{v}\n" for s, v in rows))
    hours = training_hours(run)
    window = 10 * batch / 3600
    assert hours == pytest.approx({0: 0.0, 10: window / 2, 20: window * 1.5, 30: window * 2.5})
    assert hours_at(hours, 25) == pytest.approx(window * 2.0) and hours_at(hours, 99) == hours[30]
    rows = [(10, 1.0), (20, 1.0), (30, 0.01), (40, 1.0)]  # the process was paused in the third window
    (run / "metrics.csv").write_text("step,loss,images_per_s\n" + "".join(f"{s},0.5,{v}\n" for s, v in rows))
    assert training_hours(run)[40] == pytest.approx(window * 6)  # the paused window counts 3 x the median
