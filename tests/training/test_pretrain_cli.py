"""`smp-diffusion pretrain` on raw data (FLARE root, folder of volumes -> RUN_DIR/slices); bad data exits 2."""

from __future__ import annotations

import json
from pathlib import Path

from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.data.slice_store import SliceStore
from smp_diffusion_encoder.training.checkpoint import load_checkpoint

FAST = ["--preset", "tiny", "--steps", "1", "--batch-size", "2", "--workers", "1", "--no-progress"]


def test_flare_root_is_prepared_at_the_preset_size(tmp_path) -> None:
    root = write_phantom_dataset(
        tmp_path / "flare", n_labeled=1, n_unlabeled=1, shape=(20, 64, 64), spacing=(12.0, 6.0, 6.0)
    )
    run = tmp_path / "run"
    assert main(["pretrain", str(root), "--out", str(run), *FAST]) == 0
    store = SliceStore(run / "slices")
    assert store.config.image_size == 64 and store.config.spacing_mm == 6.0  # 384 mm / 64 px
    assert [Path(s["source"]).name for s in store.shards] == ["PHANTOM_Un_0001_0000.nii.gz"]  # unlabeled only
    config = json.loads((run / "config.json").read_text())
    assert config["preprocessing"] == store.config.to_dict() and config["unet"]["image_size"] == 64
    assert config["schedule"] == {"name": "linear", "num_timesteps": 1000}
    assert (
        config["train"]["precision"] in ("fp32", "bf16")
        and "note" in config["precision_choice"]
        and config["data"]["n_slices"] == len(store)
    )
    assert load_checkpoint(run / "checkpoint.pt")["extra"]["preprocessing"] == config["preprocessing"]


def test_folder_of_volumes_and_cosine_schedule(tmp_path, volumes_dir) -> None:
    run = tmp_path / "run"
    assert (
        main(["pretrain", str(volumes_dir), "--out", str(run), *FAST, "--schedule", "cosine", "--ema-decay", "none"])
        == 0
    )
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["ema"] is None and ckpt["extra"]["pretrain"]["schedule"] == "cosine"
    assert len(SliceStore(run / "slices")) == 40


def test_bad_data_exits_2_with_the_path(tmp_path, store, capsys) -> None:
    missing = tmp_path / "nowhere"
    assert main(["pretrain", str(missing), "--out", str(tmp_path / "r1"), *FAST]) == 2
    assert f"{missing}: does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no CT here")
    assert main(["pretrain", str(empty), "--out", str(tmp_path / "r2"), *FAST]) == 2
    assert "holds no volume files (.nii, .nii.gz, .nrrd" in capsys.readouterr().err
    assert main(["pretrain", str(store), "--out", str(tmp_path / "r3"), "--preset", "small", "--steps", "1"]) == 2
    assert "slices are 64 px but the U-Net is trained at 128 px" in capsys.readouterr().err
    assert main(["pretrain", str(store), "--out", str(tmp_path / "r4"), *FAST, "--batch-size", "0"]) == 2
    assert "batch_size=0" in capsys.readouterr().err
