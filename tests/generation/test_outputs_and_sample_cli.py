"""Writing sample outputs and the ``sample`` command."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.generation.outputs import make_grid, save_samples, to_hu


def test_outputs_round_trip(tmp_path: Path) -> None:
    prep = PreprocessingConfig(hu_window=(-100.0, 300.0), image_size=8)
    x = torch.linspace(-1, 1, 3 * 8 * 8).reshape(3, 1, 8, 8)
    paths = save_samples(x, tmp_path, prep, {"seed": 3})
    assert np.array_equal(np.load(paths["npy"]), x[:, 0].numpy())
    grid = np.asarray(Image.open(paths["grid"]))
    assert grid.shape == (2 + 2 * 10, 2 + 2 * 10) and grid.dtype == np.uint8
    first = np.asarray(Image.open(tmp_path / "png" / "000000.png"))
    assert first[0, 0] == 0 and np.asarray(Image.open(tmp_path / "png" / "000002.png"))[-1, -1] == 255
    vol = read_volume(paths["nifti"], check_hu=False)  # windowed HU has no air; canonical (Z, Y, X) = (N, H, W)
    np.testing.assert_allclose(vol.array, to_hu(x, prep), atol=1e-4)
    assert to_hu(x, prep).min() == -100.0 and to_hu(x, prep).max() == 300.0
    assert json.loads(paths["metadata"].read_text())["seed"] == 3
    assert make_grid(np.ones((5, 2, 2)), nrow=2).shape == (2 + 3 * 4, 2 + 2 * 4)


def test_sample_cli_writes_every_output(tiny_run: tuple[Path, dict], tmp_path: Path) -> None:
    out = tmp_path / "s"
    rc = main(
        [
            "sample",
            str(tiny_run[0]),
            "--n",
            "2",
            "--steps",
            "2",
            "--out",
            str(out),
            "--seed",
            "1",
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    assert {p.name for p in out.iterdir()} == {"grid.png", "png", "samples.npy", "samples_hu.nii.gz", "samples.json"}
    assert np.load(out / "samples.npy").shape == (2, 64, 64)
    assert nib.load(out / "samples_hu.nii.gz").shape == (64, 64, 2)
    meta = json.loads((out / "samples.json").read_text())
    assert meta["sampler"] == "ddim" and meta["steps"] == 2 and meta["weights"].endswith("(ema)")


def test_sample_cli_reports_a_bad_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_image_sets_read_pngs_and_sample_folders_alike(tmp_path: Path) -> None:
    from smp_diffusion_encoder.errors import DatasetLayoutError
    from smp_diffusion_encoder.generation.evaluate import ImageSet

    x = torch.rand(5, 1, 16, 16) * 2 - 1
    save_samples(x, tmp_path / "s", PreprocessingConfig(image_size=16))
    pngs, folder = ImageSet(tmp_path / "s" / "png"), ImageSet(tmp_path / "s")
    assert len(pngs) == len(folder) == 5
    torch.testing.assert_close(pngs[3], x[3], atol=1 / 127.5, rtol=0)
    assert torch.equal(folder[3], x[3])
    sub = ImageSet(tmp_path / "s", max_images=3, seed=1)
    assert len(sub) == 3 and sub.indices.tolist() == ImageSet(tmp_path / "s", max_images=3, seed=1).indices.tolist()
    assert next(sub.batches(2)).shape == (2, 1, 16, 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="no slice store"):
        ImageSet(tmp_path / "empty")
