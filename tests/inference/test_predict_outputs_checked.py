"""`smp-diffusion predict` refuses outputs it could not write before the model runs: a name longer than the
file system allows, an unwritable --out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import smp_diffusion_encoder  # noqa: F401  (registers ddpm-ct-tiny)
from smp_diffusion_encoder._io import name_max
from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.encoder import FeatureConfig
from smp_diffusion_encoder.inference import ProbeModel, save_probe
from tests.data.synthetic_volumes import synthetic_ct, write_nifti


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = ProbeModel.build("tiny", FeatureConfig(timesteps=(50,)), num_classes=14)
    return save_probe(model, tmp_path_factory.mktemp("probe"), PreprocessingConfig(image_size=64))


def test_a_long_input_name_is_predicted_or_refused_before_the_model_runs(probe_dir, tmp_path, capsys, monkeypatch):
    limit = name_max(tmp_path)
    name = "CT_" + "x" * (limit - 9 - len("_0000.nii.gz")) + "_0000.nii.gz"  # 6 bytes short of the limit
    src = write_nifti(tmp_path / "in" / name, synthetic_ct())
    case = name[: -len("_0000.nii.gz")]
    args = ["predict", str(src), "--model", str(probe_dir), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(args) == 0  # the temporary name used to add 14 bytes: Errno 36 after the model had run
    assert [p.name for p in (tmp_path / "o").iterdir()] == [f"{case}.nii.gz"]

    def must_not_run(*a, **k):
        raise AssertionError("the model ran before the output names were checked")

    monkeypatch.setattr("smp_diffusion_encoder.inference.volume.predict_volume", must_not_run)
    assert main([*args[:-1], "--out", str(tmp_path / "p"), "--save-probabilities", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: InputFileError: {src}: its output file name '{case}_probabilities.nii.gz' "
        f"would be {len(case) + 21} bytes, more than the {limit} the file system"
    )
    assert not (tmp_path / "p").exists()


def test_an_unwritable_out_is_refused_first(probe_dir, tmp_path, capsys, monkeypatch):
    src = write_nifti(tmp_path / "in" / "ct_0000.nii.gz", synthetic_ct())
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(
        "smp_diffusion_encoder.inference.load_model",
        lambda *a: (_ for _ in ()).throw(AssertionError("loaded the model first")),
    )
    assert main(["predict", str(src), "--model", str(probe_dir), "--out", str(tmp_path / "file" / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"error: InputFileError: {tmp_path / 'file' / 'o'}: cannot be written: {tmp_path / 'file'} is a "
        f"file, not a folder"
    ]
    if os.geteuid() != 0:  # root writes into read-only folders
        (tmp_path / "ro").mkdir(mode=0o555)
        assert main(["predict", str(src), "--model", str(probe_dir), "--out", str(tmp_path / "ro" / "o")]) == 2
        assert "cannot be written (Permission denied" in capsys.readouterr().err
