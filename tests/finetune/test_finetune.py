"""End-to-end few-shot fine-tuning on the CT phantom: probe and smp U-Net, split, model folder, predict, resume."""

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import smp_diffusion_encoder  # noqa: F401  (registers ddpm-ct-tiny)
from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.data.splits import read_split_json
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.finetune import FinetuneConfig, FinetuneResult, api, finetune, mean_slice_dice
from smp_diffusion_encoder.formats.model_folder import load_model

PROBE = dict(method="probe", encoder="ddpm-ct-tiny", budget="4", batch_size=2)
VALIDATED = dict(val_fraction=0.5, min_val_slices=2)  # the phantom is small: allow validation on 2+ slices


def run(root: Path, out: Path, *, split=None, pool=None, resume: bool = False, **options) -> FinetuneResult:
    return finetune(root, FinetuneConfig(**options), out_dir=out, split=split, pool=pool, resume=resume, progress=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("phantom"), n_labeled=2, n_unlabeled=0, shape=(12, 64, 64))


@pytest.fixture(scope="module")
def probe_run(root: Path, tmp_path_factory: pytest.TempPathFactory) -> FinetuneResult:
    return run(root, tmp_path_factory.mktemp("probe") / "run", steps=4, **PROBE, **VALIDATED)


def _history(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_probe_trains_writes_split_and_a_predictable_model(
    probe_run: FinetuneResult, root: Path, tmp_path: Path
) -> None:
    run_dir = probe_run.model_dir.parent
    rows = _history(run_dir)
    losses = [float(r["loss"]) for r in rows if r["loss"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert any(r.get("val_dice") for r in rows)
    split = read_split_json(run_dir / "split.json")
    assert len(split.train) == 4 and len(split.evaluation) >= 2
    assert not set(split.train) & set(split.evaluation)
    assert all(abs(z - zt) > split.params["gap"] for c, z in split.evaluation for ct, zt in split.train if c == ct)
    config = json.loads((run_dir / "config.json").read_text())
    assert (
        config["method"] == "probe"
        and config["schedule"]["steps"] == 4
        and "validation on" in config["schedule"]["reason"]
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["best_step"] in (1, 2, 3, 4) and 0 <= summary["best_val_dice"] <= 1
    assert probe_run.best_val_dice == summary["best_val_dice"] and "best validation" in probe_run.describe()
    loaded = load_model(probe_run.model_dir)
    assert loaded.kind == "probe" and loaded.preprocessing.image_size == 64
    image = next(root.rglob("*_0000.nii.gz"))
    assert (
        main(["predict", str(image), "--model", str(probe_run.model_dir), "--out", str(tmp_path), "--no-progress"]) == 0
    )
    (pred,) = tmp_path.glob("*.nii.gz")
    assert nib.load(pred).shape == nib.load(image).shape


def test_unet_via_cli_reports_how_it_stopped(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "unet"
    assert (
        main(
            [
                "finetune",
                str(root),
                "--method",
                "unet",
                "--encoder",
                "ddpm-ct-tiny",
                "--out",
                str(out),
                "--steps",
                "3",
                "--batch-size",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "stopped after 3 of 3 steps: schedule complete (3 steps)" in printed
    assert "too few logged steps" in printed or "loss " in printed
    losses = [float(r["loss"]) for r in _history(out) if r["loss"]]
    assert losses[-1] < losses[0]
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    loaded = load_model(out / "model")
    assert loaded.kind == "smp" and loaded.num_classes == 14
    with torch.no_grad():
        assert loaded.module(torch.zeros(1, 1, 64, 64)).shape == (1, 14, 64, 64)
    assert json.loads((out / "split.json").read_text())["budget"] == "4"
    assert not read_split_json(out / "split.json").evaluation  # few-shot runs use no extra labels by default


def test_the_schedule_rule_sets_the_length_and_the_learning_rate_decays(root: Path, tmp_path: Path) -> None:
    result = run(root, tmp_path / "rule", **PROBE)  # steps from the rule: 1000 for 4 slices
    assert result.planned == result.steps == 1000 and result.reason == "schedule complete (1000 steps)"
    assert result.best_val_dice is None and result.flattened is not None
    rows = _history(tmp_path / "rule")
    lrs = [float(r["lr"]) for r in rows if r["lr"]]
    assert max(lrs) == pytest.approx(1e-2, rel=0.02) and lrs[-1] < 1e-4  # warm-up, then cosine decay to ~0


class Interrupted(Exception):
    pass


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, name: str, batches: int) -> None:
    """Make the run die while drawing batch number ``batches`` (a crash mid-run)."""
    real = getattr(api, name)

    def patched(*args, **kwargs):
        data = real(*args, **kwargs)

        def stream(start_step: int):
            for i, batch in enumerate(data(start_step)):
                if start_step == 0 and i == batches:
                    raise Interrupted
                yield batch

        return stream

    monkeypatch.setattr(api, name, patched)


def test_an_interrupted_run_resumes_exactly(
    probe_run: FinetuneResult, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    options = {**PROBE, **VALIDATED, "steps": 4}
    with monkeypatch.context() as m:
        _interrupt_after(m, "slice_batches", 3)
        with pytest.raises(Interrupted):
            run(root, out, **options)
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 3  # checkpoints every 10% (>= 1 step)
    with pytest.raises(ConfigError, match=r"exists: continue that run with --resume \(resume=True in Python\)"):
        run(root, out, **options)
    split_before = (out / "split.json").read_text()
    with pytest.raises(ConfigError, match="was trained with"):
        run(root, out, resume=True, **{**options, "seed": 1})
    assert (out / "split.json").read_text() == split_before  # refused before anything was written
    resumed = run(root, out, resume=True, **options)
    assert resumed.steps == 4 and resumed.best_val_dice == probe_run.best_val_dice
    straight = torch.load(probe_run.model_dir.parent / "checkpoint.pt", weights_only=False)
    again = torch.load(out / "checkpoint.pt", weights_only=False)
    for key, value in straight["model"].items():
        assert torch.equal(value, again["model"][key]), key
    keep = ("step", "loss", "val_dice")
    assert [{k: r.get(k) for k in keep} for r in _history(out)] == [
        {k: r.get(k) for k in keep} for r in _history(probe_run.model_dir.parent)
    ]


def test_bad_options_and_mean_slice_dice(root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="method='unet'"):
        FinetuneConfig(steps=1, unfreeze_at=2, **PROBE)
    with pytest.raises(ConfigError, match="augment must be one of"):
        FinetuneConfig(steps=1, augment="light", **PROBE)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="augment_views"):
        FinetuneConfig(steps=1, augment_views=0, **PROBE)
    with pytest.raises(ConfigError, match="needs a ddpm-ct encoder.*resnet18"):
        run(root, tmp_path, method="probe", encoder="resnet18", steps=1)
    with pytest.raises(ConfigError, match="method must be"):
        FinetuneConfig(method="svm")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="label budget"):
        FinetuneConfig(budget="four")
    gt = np.array([[[0, 1], [2, 2]], [[0, 0], [0, 0]]])
    assert mean_slice_dice(gt, gt, 4) == 1.0
    assert mean_slice_dice(gt, np.zeros_like(gt), 4) == pytest.approx(0.5)  # slice 1: 0, slice 2: no organ -> 1


def test_unet_with_augmentation_and_unfreezing_resumes_exactly(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = dict(
        method="unet",
        encoder="ddpm-ct-tiny",
        batch_size=2,
        augment="default",
        augment_views=3,
        unfreeze_at=2,
        encoder_lr_scale=0.5,
        steps=3,
    )
    straight = run(root, tmp_path / "straight", **opts)
    with monkeypatch.context() as m:
        _interrupt_after(m, "slice_batches", 2)
        with pytest.raises(Interrupted):
            run(root, tmp_path / "resumed", **opts)
    resumed = run(root, tmp_path / "resumed", resume=True, **opts)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 3
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    rows = _history(tmp_path / "resumed")
    assert [float(r["encoder_trainable"]) for r in rows] == [0.0, 0.0, 1.0]
    assert b["optimizer"]["param_groups"][1]["initial_lr"] == pytest.approx(0.5e-3)
    assert load_model(resumed.model_dir).kind == load_model(straight.model_dir).kind == "smp"


def test_encoder_weights_and_their_preprocessing_are_used(
    root: Path, tmp_path: Path, registry_snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
    from smp_diffusion_encoder.encoder import EncoderSpec, FeatureConfig, FeaturePyramid
    from smp_diffusion_encoder.formats.encoder_weights import save_encoder_weights
    from smp_diffusion_encoder.formats.packaged import seed_hf_cache
    from smp_diffusion_encoder.registry import HubWeights, register_encoder

    torch.manual_seed(1)
    enc = FeaturePyramid("tiny", FeatureConfig())
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_encoder_weights(
        enc,
        tmp_path / "weights",
        EncoderSpec("tiny"),
        PreprocessingConfig(hu_window=(-100, 200), image_size=64),
        card={"license": "apache-2.0"},
    )
    revision = "ab" * 20
    seed_hf_cache(tmp_path / "weights", "test/ddpm-ct-tiny-ft", revision, tmp_path / "hf")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    register_encoder("ddpm-ct-tiny-ft", "tiny", FeatureConfig(), {"ct": HubWeights("test/ddpm-ct-tiny-ft", revision)})
    result = run(root, tmp_path / "run", method="probe", encoder="ddpm-ct-tiny-ft", encoder_weights="auto", steps=1)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["encoder_weights"] == "ct"  # auto -> ct
    loaded = load_model(result.model_dir)
    assert loaded.preprocessing.hu_window == (-100.0, 200.0) and loaded.preprocessing.spacing_mm == 6.0
    trained = loaded.module.encoder.unet.state_dict()
    source = enc.unet.state_dict()
    assert trained and all(torch.equal(v, source[k]) for k, v in trained.items())


def test_mlp_ensemble_trains_saves_and_predicts_by_majority_vote(root: Path, tmp_path: Path) -> None:
    opts = dict(method="mlp", encoder="ddpm-ct-tiny", batch_size=256, mlp_members=3, steps=4, **VALIDATED)
    model_dir = run(root, tmp_path / "run", **opts).model_dir
    losses = [float(r["loss"]) for r in _history(tmp_path / "run") if r["loss"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    loaded = load_model(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    assert loaded.kind == "probe" and config["probe"]["kind"] == "mlp" and config["probe"]["num_models"] == 3
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        logits = loaded.module(x)
        feats = loaded.module.encoder(x)
        vote = loaded.module.probe.ensemble.predict_map(feats, (64, 64))
    assert torch.equal(logits.argmax(1), vote.labels)  # softmax/argmax of the saved model = majority vote
    torch.testing.assert_close(logits.softmax(1), vote.votes, atol=1e-4, rtol=0)
    image = next(root.rglob("*_0000.nii.gz"))
    assert (
        main(
            [
                "predict",
                str(image),
                "--model",
                str(model_dir),
                "--out",
                str(tmp_path / "pred"),
                "--no-progress",
                "--save-uncertainty",
            ]
        )
        == 0
    )
    unc = nib.load(next((tmp_path / "pred").glob("*_uncertainty.nii.gz"))).get_fdata()
    assert unc.min() >= 0 and unc.max() <= np.log(3) + 1e-3  # vote entropy of 3 members

    again = run(root, tmp_path / "again", **opts)
    straight = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]
    repeated = torch.load(again.model_dir.parent / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(v, repeated[k]) for k, v in straight.items())  # pixel draws are seeded


def test_given_split_and_pool_are_respected(root: Path, tmp_path: Path) -> None:
    from smp_diffusion_encoder.data.splits import Split, heldout_split, write_split_json

    case = sorted(p.name.removesuffix(".nii.gz") for p in root.rglob("labels/*.nii.gz"))[0]
    held = heldout_split(case, range(12), block=3, gap=1, seed=0)
    train_z = held.by_case("train")
    run(root, tmp_path / "pool", steps=1, pool=train_z, **PROBE, **VALIDATED)
    drawn = read_split_json(tmp_path / "pool" / "split.json")
    assert {z for _, z in drawn.train + drawn.evaluation} <= set(train_z[case])  # held-out slices untouched

    given = Split("custom", 0, ((case, train_z[case][0]),), ((case, train_z[case][-1]),))
    write_split_json(tmp_path / "given.json", given)
    out = tmp_path / "given"
    assert (
        main(
            [
                "finetune",
                str(root),
                "--method",
                "probe",
                "--encoder",
                "ddpm-ct-tiny",
                "--out",
                str(out),
                "--split",
                str(tmp_path / "given.json"),
                "--steps",
                "2",
                "--min-val-slices",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert read_split_json(out / "split.json") == given
    bad = Split("custom", 0, ((case, 99),))
    with pytest.raises(ConfigError, match="z=99"):
        run(root, tmp_path / "bad", steps=1, split=bad, **PROBE)


def test_resnet_baseline_trains_from_scratch(root: Path, tmp_path: Path) -> None:
    model_dir = run(
        root,
        tmp_path / "r18",
        method="unet",
        encoder="resnet18",
        image_size=64,
        unfreeze_at=0,
        encoder_lr_scale=1.0,
        batch_size=2,
        steps=3,
    ).model_dir
    rows = _history(tmp_path / "r18")
    assert [float(r["encoder_trainable"]) for r in rows] == [1.0, 1.0, 1.0]
    loaded = load_model(model_dir)
    assert loaded.preprocessing.image_size == 64 and loaded.preprocessing.hu_window == (-160.0, 240.0)
    start = torch.load(tmp_path / "r18" / "checkpoint.pt", weights_only=False)["model"]
    assert any("encoder" in k for k in start)


def test_auto_weights_mean_the_shipped_ct_weights_when_there_are_some() -> None:
    from smp_diffusion_encoder.registry.records import packaged_weights
    from smp_diffusion_encoder.registry.weights import resolve_weights

    assert resolve_weights("ddpm-ct-tiny", "auto") is None  # ships no weights
    assert resolve_weights("resnet34", "auto") is None  # baselines start from scratch
    assert resolve_weights("ddpm-ct", "auto") == ("ct" if packaged_weights("ddpm-ct") else None)
    assert resolve_weights("ddpm-ct", None) is None and resolve_weights("ddpm-ct", "ct") == "ct"
