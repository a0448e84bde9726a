"""Model folders (smp model, linear probe) and `smp-diffusion predict`: geometry, folders, bad inputs, DICOM."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

import smp_diffusion_encoder  # noqa: F401  (registers ddpm-ct-tiny)
from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig, SliceGeometry
from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.encoder import FeatureConfig
from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.inference import (
    ProbeModel,
    case_name,
    load_model,
    predict_volume,
    save_probe,
    save_segmenter,
)
from tests.data.synthetic_volumes import synthetic_ct, write_dicom_series

PREP = PreprocessingConfig(image_size=64)
SHAPE = (6, 48, 40)  # (Z, Y, X): non-square, so padding and cropping are exercised


def _perturb(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():  # fresh diffusion U-Nets zero their residual outputs; make predictions vary
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return module


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    root = write_phantom_dataset(tmp_path_factory.mktemp("phantom"), n_labeled=2, n_unlabeled=0, shape=SHAPE)
    return root / "Training" / "FLARE22_LabeledCase50" / "images"


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory) -> Path:
    model = _perturb(ProbeModel.build("tiny", FeatureConfig(timesteps=(50, 150)), num_classes=14))
    return save_probe(model, tmp_path_factory.mktemp("probe"), PREP)


@pytest.fixture(scope="module")
def smp_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = _perturb(
        smp.Unet(
            "ddpm-ct-tiny",
            encoder_weights=None,
            in_channels=1,
            classes=14,
            encoder_depth=3,
            decoder_channels=(32, 16, 8),
        )
    )
    return save_segmenter(model, tmp_path_factory.mktemp("smp"), PREP)


def _assert_same_geometry(out: Path, src: Path) -> None:
    a, b = nib.load(out), nib.load(src)
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.affine, b.affine)
    np.testing.assert_array_equal(a.header.get_qform(), b.header.get_qform())
    np.testing.assert_array_equal(a.header.get_sform(), b.header.get_sform())
    assert int(a.header["qform_code"]) == int(b.header["qform_code"])
    assert int(a.header["sform_code"]) == int(b.header["sform_code"])
    np.testing.assert_allclose(a.header.get_zooms()[:3], b.header.get_zooms()[:3])


def test_probe_folder_round_trip(probe_dir):
    config = json.loads((probe_dir / "config.json").read_text())
    assert config["format"] == "smp-diffusion-probe" and config["preprocessing"]["image_size"] == 64
    loaded = load_model(probe_dir)
    assert loaded.kind == "probe" and loaded.num_classes == 14 and loaded.preprocessing == PREP
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert loaded.module(x).shape == (2, 14, 64, 64)
        assert torch.equal(loaded.module(x), load_model(probe_dir).module(x))
    config["probe"]["channels"][0] += 1
    bad = probe_dir.parent / "bad-probe"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(config))
    (bad / "model.safetensors").write_bytes((probe_dir / "model.safetensors").read_bytes())
    with pytest.raises(WeightsError, match="do not match the encoder"):
        load_model(bad)


def test_smp_folder_needs_preprocessing(smp_dir, tmp_path):
    loaded = load_model(smp_dir)
    assert loaded.kind == "smp" and loaded.num_classes == 14 and loaded.preprocessing == PREP
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((smp_dir / name).read_bytes())
    with pytest.raises(WeightsError, match="no preprocessing.json"):
        load_model(tmp_path)


def test_labels_are_argmax_of_mapped_back_probabilities(phantom, probe_dir):
    model = load_model(probe_dir)
    volume = read_volume(sorted(phantom.glob("*.nii.gz"))[0])
    pred = predict_volume(model, volume, batch_size=4, probabilities=True, uncertainty=True, precision="fp32")
    geometry = SliceGeometry.of(volume, PREP)
    with torch.no_grad():
        x = torch.from_numpy(geometry.image_slices(volume, PREP)).unsqueeze(1)
        p = model.module(x).softmax(1).numpy()  # (Z, K, S, S)
    ref = geometry.probabilities_to_volume(p).transpose(1, 0, 2, 3)  # (K, Z, Y, X)
    assert pred.probabilities.dtype == np.float16  # 2 bytes per voxel and class
    np.testing.assert_allclose(pred.probabilities, ref, atol=5e-4)
    np.testing.assert_array_equal(pred.labels, ref.argmax(0))
    assert pred.labels.shape == SHAPE and len(np.unique(pred.labels)) > 1
    assert (
        pred.uncertainty.shape == SHAPE and 0 <= pred.uncertainty.min() <= pred.uncertainty.max() <= np.log(14) + 1e-5
    )


@pytest.mark.parametrize("model_fixture", ["probe_dir", "smp_dir"])
def test_bf16_autocast_agrees_with_fp32_and_auto_follows_the_hardware(phantom, model_fixture, request, monkeypatch):
    """bf16 autocast (forced, so it runs on any CPU) changes probabilities by bf16 rounding only; "auto" takes
    bf16 exactly where the CPU computes it natively."""
    import smp_diffusion_encoder._device as device_mod

    model = load_model(request.getfixturevalue(model_fixture))
    volume = read_volume(sorted(phantom.glob("*.nii.gz"))[0])
    fp32 = predict_volume(model, volume, batch_size=4, probabilities=True, precision="fp32")
    bf16 = predict_volume(model, volume, batch_size=4, probabilities=True, precision="bf16")
    assert bf16.probabilities.dtype == np.float16
    assert np.abs(bf16.probabilities.astype(np.float32) - fp32.probabilities).mean() < 0.01
    assert (bf16.labels == fp32.labels).mean() > 0.97
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(device_mod, "cpu_supports_bf16", lambda native=native: native)
        assert device_mod.resolve_precision("auto", torch.device("cpu")) == expected
    with pytest.raises(ConfigError, match="precision"):
        predict_volume(model, volume, precision="fp16")


@pytest.mark.parametrize("model_fixture", ["probe_dir", "smp_dir"])
def test_cli_predicts_a_file_with_exact_geometry(phantom, model_fixture, request, tmp_path):
    src = sorted(phantom.glob("*.nii.gz"))[0]
    out = tmp_path / "pred"
    args = [
        str(src),
        "--model",
        str(request.getfixturevalue(model_fixture)),
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--save-probabilities",
        "--save-uncertainty",
        "--no-progress",
    ]
    assert main(["predict", *args]) == 0
    case = case_name(src)
    assert case == "PHANTOM_Tr_0001"
    assert sorted(p.name for p in out.iterdir()) == [
        f"{case}.nii.gz",
        f"{case}_probabilities.nii.gz",
        f"{case}_uncertainty.nii.gz",
    ]
    _assert_same_geometry(out / f"{case}.nii.gz", src)
    assert nib.load(out / f"{case}.nii.gz").get_data_dtype() == np.uint8
    probs = nib.load(out / f"{case}_probabilities.nii.gz")
    assert probs.shape == (*nib.load(src).shape, 14)
    assert probs.get_data_dtype() == np.uint8 and probs.dataobj.slope == pytest.approx(1 / 255)
    np.testing.assert_allclose(np.asarray(probs.dataobj).sum(-1), 1.0, atol=14 / 510)  # each off by <= 1/510
    np.testing.assert_array_equal(probs.affine, nib.load(src).affine)
    _assert_same_geometry(out / f"{case}_uncertainty.nii.gz", src)


def test_cli_folder_of_two_and_corrupt_input(phantom, probe_dir, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["predict", str(phantom), "--model", str(probe_dir), "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["PHANTOM_Tr_0001.nii.gz", "PHANTOM_Tr_0002.nii.gz"]
    for src in sorted(phantom.glob("*.nii.gz")):
        _assert_same_geometry(out / f"{case_name(src)}.nii.gz", src)

    bad_dir = tmp_path / "inputs"
    bad_dir.mkdir()
    good = sorted(phantom.glob("*.nii.gz"))[0]
    (bad_dir / "a_bad_0000.nii.gz").write_bytes(good.read_bytes()[:300])  # truncated, sorted first
    (bad_dir / "b_good_0000.nii.gz").write_bytes(good.read_bytes())
    out2 = tmp_path / "pred2"
    assert main(["predict", str(bad_dir), "--model", str(probe_dir), "--out", str(out2), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "a_bad_0000.nii.gz" in err and "CorruptFileError" in err
    assert not out2.exists() or not any(out2.iterdir())  # stopped at the first error, nothing half-written
    code = main(
        ["predict", str(bad_dir), "--model", str(probe_dir), "--out", str(out2), "--no-progress", "--keep-going"]
    )
    assert code == 2 and "a_bad_0000.nii.gz" in capsys.readouterr().err
    assert sorted(p.name for p in out2.iterdir()) == ["b_good.nii.gz"]


def test_cli_bad_model_folder(phantom, tmp_path, capsys):
    assert main(["predict", str(phantom), "--model", str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "not a model folder" in capsys.readouterr().err


def test_cli_dicom_series(probe_dir, tmp_path):
    hu = synthetic_ct((24, 20, 5)).astype(np.float64)
    series = write_dicom_series(tmp_path / "series_A", hu)
    out = tmp_path / "pred"
    assert main(["predict", str(series), "--model", str(probe_dir), "--out", str(out), "--no-progress"]) == 0
    pred = read_volume(out / "series_A.nii.gz", kind="label")
    src = read_volume(series)
    assert pred.array.shape == src.array.shape
    np.testing.assert_allclose(pred.canonical_affine, src.canonical_affine, atol=1e-4)


def test_case_names_duplicates_and_device(phantom, probe_dir, tmp_path, capsys):
    from smp_diffusion_encoder.errors import ConfigError, InputFileError
    from smp_diffusion_encoder.inference import predict_files, resolve_inputs

    assert case_name("a/FLARE22_Tr_0001_0000.nii.gz") == "FLARE22_Tr_0001"
    assert case_name("b/scan.nii") == "scan" and case_name("c/series_7") == "series_7"
    src = sorted(phantom.glob("*.nii.gz"))[0]
    copy = tmp_path / "other" / src.name
    copy.parent.mkdir()
    copy.write_bytes(src.read_bytes())
    with pytest.raises(ConfigError, match="would all be written as PHANTOM_Tr_0001.nii.gz"):
        predict_files([src, copy], load_model(probe_dir), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputFileError, match="does not exist"):
        resolve_inputs(tmp_path / "missing.nii.gz")
    if not torch.cuda.is_available():
        assert (
            main(["predict", str(src), "--model", str(probe_dir), "--out", str(tmp_path / "o"), "--device", "cuda"])
            == 2
        )
        assert "cuda" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_saved_probabilities_need_a_bounded_number_of_bytes_per_voxel(probe_dir, tmp_path):
    """--save-probabilities used to hold the (K, Z, Y, X) maps in float32 and copy them again in the file's
    voxel order (about 130 bytes per input voxel at K = 14). Now: float16 maps (28), their uint8 file form (14)
    and one class in float32 (4), written from a view. numpy allocations, traced by tracemalloc."""
    import tracemalloc

    from smp_diffusion_encoder.inference import predict_files

    src = tmp_path / "BIG_0000.nii.gz"
    nib.save(nib.Nifti1Image(synthetic_ct((96, 96, 16)), np.diag([0.8, 0.8, 2.5, 1.0])), src)
    model = load_model(probe_dir)
    peaks = {}
    for save in (False, True):
        tracemalloc.start()
        predict_files(
            [src],
            model,
            tmp_path / f"out{save}",
            batch_size=1,
            device="cpu",
            precision="fp32",
            progress=False,
            save_probabilities=save,
        )
        peaks[save] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    per_voxel = (peaks[True] - peaks[False]) / (96 * 96 * 16)
    assert 28 <= per_voxel < 56, per_voxel  # float32 maps alone were 56
