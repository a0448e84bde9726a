"""`smp-diffusion phantom`, `prepare-slices` and `split` end to end, and their errors (exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.data.splits import read_split_json


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "flare"
    assert main(["phantom", str(root), "--labeled", "2", "--unlabeled", "1", "--seed", "3", "--preview"]) == 0
    return root


def test_phantom_writes_flare_layout_and_preview(phantom_root, capsys) -> None:
    names = sorted(p.relative_to(phantom_root).as_posix() for p in phantom_root.rglob("*.nii.gz"))
    assert names == [
        "Training/FLARE22_LabeledCase50/images/PHANTOM_Tr_0001_0000.nii.gz",
        "Training/FLARE22_LabeledCase50/images/PHANTOM_Tr_0002_0000.nii.gz",
        "Training/FLARE22_LabeledCase50/labels/PHANTOM_Tr_0001.nii.gz",
        "Training/FLARE22_LabeledCase50/labels/PHANTOM_Tr_0002.nii.gz",
        "Training/FLARE22_UnlabeledCase1-1000/PHANTOM_Un_0001_0000.nii.gz",
    ]
    assert (phantom_root / "preview.png").read_bytes()[:4] == b"\x89PNG"


def test_prepare_slices_from_flare_root(phantom_root, tmp_path, capsys) -> None:
    out = tmp_path / "store"
    args = ["prepare-slices", str(phantom_root), str(out), "--workers", "1", "--image-size", "32", "--no-progress"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    # a FLARE root gives its unlabeled images only (labeled cases are the test data of few-shot studies)
    assert [Path(s["source"]).name for s in manifest["shards"]] == ["PHANTOM_Un_0001_0000.nii.gz"]
    assert f"{manifest['n_slices']} slices from 1 volumes" in capsys.readouterr().out
    assert main([*args[:-2], "64", "--no-progress"]) == 2  # other image size: refused, store kept
    assert "other settings" in capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert main([*args, "--include-labeled", "--overwrite"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [Path(s["source"]).name for s in manifest["shards"]] == [
        "PHANTOM_Un_0001_0000.nii.gz",
        "PHANTOM_Tr_0001_0000.nii.gz",
        "PHANTOM_Tr_0002_0000.nii.gz",
    ]


def test_prepare_slices_reads_nrrd_and_mha_like_nifti(phantom_root, tmp_path, capsys) -> None:
    """The same phantom as NIfTI, NRRD and MHA (converted with SimpleITK) gives the same model slices."""
    import numpy as np
    import SimpleITK as sitk

    nifti = phantom_root / "Training/FLARE22_UnlabeledCase1-1000/PHANTOM_Un_0001_0000.nii.gz"
    src = tmp_path / "src"
    src.mkdir()
    for suffix in (".nrrd", ".mha"):
        sitk.WriteImage(sitk.ReadImage(str(nifti)), str(src / f"PHANTOM_Un_0001{suffix}"))
    out = tmp_path / "store"
    assert (
        main(
            ["prepare-slices", str(nifti), str(src), str(out), "--workers", "1", "--image-size", "32", "--no-progress"]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert [Path(s["source"]).suffix for s in manifest["shards"]] == [".gz", ".mha", ".nrrd"]
    shards = [np.load(out / s["file"]) for s in manifest["shards"]]
    np.testing.assert_array_equal(shards[1], shards[0])
    np.testing.assert_array_equal(shards[2], shards[0])


def test_prepare_slices_names_a_bad_volume(tmp_path, capsys) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "bad_0000.nii.gz").write_bytes(b"not a nifti at all")
    assert (
        main(["prepare-slices", str(tmp_path / "src"), str(tmp_path / "out"), "--workers", "1", "--no-progress"]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad_0000.nii.gz" in err
    assert not list((tmp_path / "out" / "shards").iterdir())


def test_split_writes_reproducible_json(phantom_root, tmp_path, capsys) -> None:
    for name in ("a.json", "b.json"):
        assert main(["split", str(phantom_root), "--budget", "4", "--seed", "1", "--out", str(tmp_path / name)]) == 0
    a, b = read_split_json(tmp_path / "a.json"), read_split_json(tmp_path / "b.json")
    assert a == b and a.budget == "4" and len(a.train) == 4 and len(a.by_case()) == 2
    assert "4 labeled slices from 2 cases" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["split", "{tmp}/missing", "--budget", "4", "--out", "{tmp}/s.json"], "missing"),
        (["split", "{root}", "--budget", "four", "--out", "{tmp}/s.json"], "budget"),
        (["split", "{root}", "--budget", "99cases", "--out", "{tmp}/s.json"], "only 2 labeled cases"),
        (["phantom", "{tmp}/p", "--labeled", "-1"], "case counts"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(phantom_root, tmp_path, capsys, argv, message) -> None:
    argv = [a.format(tmp=tmp_path, root=phantom_root) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "p").exists()
