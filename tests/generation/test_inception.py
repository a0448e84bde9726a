"""The Inception feature extractor: local weights only, clear error without them, feature shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import inception_v3

from smp_diffusion_encoder.errors import WeightsError
from smp_diffusion_encoder.generation.inception import ENV_VAR, extract_features, load_inception


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """torchvision-layout weights (with AuxLogits, as torchvision's file has) as .pth and .safetensors."""
    torch.manual_seed(0)
    sd = {k: v.contiguous() for k, v in inception_v3(weights=None, init_weights=True).state_dict().items()}
    folder = tmp_path_factory.mktemp("inception")
    torch.save(sd, folder / "inception.pth")
    save_file(sd, str(folder / "inception.safetensors"))
    return {"pth": folder / "inception.pth", "safetensors": folder / "inception.safetensors", "sd": sd}  # type: ignore[dict-item]


def test_missing_weights_name_the_file_to_provide(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(
        WeightsError,
        match=r"no Inception-V3 weights given.*inception_v3_google-0cc3c7bd.pth.*"
        rf"--inception-weights PATH or set {ENV_VAR}",
    ):
        load_inception()
    with pytest.raises(WeightsError, match=r"--inception-weights=.*nope.pth is not a file"):
        load_inception(tmp_path / "nope.pth")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "gone.pth"))
    with pytest.raises(WeightsError, match=rf"\${ENV_VAR}=.*gone.pth is not a file"):
        load_inception()


def test_wrong_or_unsafe_files_are_refused(tmp_path: Path) -> None:
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not torchvision Inception-V3 weights"):
        load_inception(tmp_path / "other.pth")
    torch.save({"x": Path("not a tensor")}, tmp_path / "pickle.pth")
    with pytest.raises(WeightsError, match="unreadable Inception weights"):
        load_inception(tmp_path / "pickle.pth")


def test_pth_and_safetensors_load_the_same_weights(random_weights: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(random_weights["pth"]))
    a = load_inception().state_dict()
    b = load_inception(random_weights["safetensors"]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(a["net.Conv2d_1a_3x3.conv.weight"], random_weights["sd"]["Conv2d_1a_3x3.conv.weight"])


def test_features_have_the_reference_shapes(random_weights: dict) -> None:
    net = load_inception(random_weights["safetensors"])
    x = torch.rand(1, 1, 48, 48) * 2 - 1
    pool, spatial = extract_features(net, torch.cat([x, -x]), batch_size=1)
    assert pool.shape == (2, 2048) and spatial.shape == (2, 7 * 17 * 17)
    with torch.no_grad():  # a grey image equals the same image on 3 channels
        torch.testing.assert_close(net(x.repeat(1, 3, 1, 1))[0].double().numpy(), pool[:1])


def test_gen_metrics_cli(
    random_weights: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import numpy as np

    from smp_diffusion_encoder.cli.main import main
    from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
    from smp_diffusion_encoder.generation.outputs import save_samples

    monkeypatch.delenv(ENV_VAR, raising=False)
    x = np.random.default_rng(0).uniform(-1, 1, size=(5, 32, 32)).astype(np.float32)
    np.save(tmp_path / "real.npy", x)
    save_samples(x, tmp_path / "fake", PreprocessingConfig(image_size=32))
    assert main(["gen-metrics", str(tmp_path / "real.npy"), str(tmp_path / "fake")]) == 2
    assert "--inception-weights PATH" in capsys.readouterr().err
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "gen-metrics",
                str(tmp_path / "real.npy"),
                str(tmp_path / "fake"),
                "--inception-weights",
                str(random_weights["safetensors"]),
                "--out",
                str(out),
                "--max-images",
                "4",
            ]
        )
        == 0
    )
    m = json.loads(out.read_text())
    assert m["num_real"] == m["num_fake"] == 4 and m["precision"] == m["recall"] == m["f1"] == 1.0
    assert m["fid"] is None and "use more than 2048" in m["notes"][0]  # 4 images: no 2048-d covariance
    assert len(m["inception_weights_sha256"]) == 64
