"""benchmarks/z_features.py on tiny arguments: both arms trained on a phantom, scored, summarised, resumable."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from benchmarks import z_features
from smp_diffusion_encoder.data.phantom import write_phantom_dataset


def test_neighbours_clip_at_the_edges() -> None:
    assert z_features.neighbours(0, 2, 10) == [0, 0, 2]
    assert z_features.neighbours(5, 2, 10) == [3, 5, 7]
    assert z_features.neighbours(9, 2, 10) == [7, 9, 9]


def test_context_decoder_starts_as_the_centre_slice() -> None:
    inner = torch.nn.Conv2d(4, 2, 1)
    decoder = z_features.ContextDecoder(lambda feats: inner(feats[0]), [4])  # type: ignore[arg-type]
    centre = torch.randn(1, 4, 3, 3)
    stacked = torch.cat([torch.randn(1, 4, 3, 3), centre, torch.randn(1, 4, 3, 3)], dim=1)
    torch.testing.assert_close(decoder([stacked]), inner(centre))


def test_both_arms_train_score_and_resume(tmp_path: Path) -> None:
    root = write_phantom_dataset(tmp_path / "train", n_labeled=1, n_unlabeled=0, shape=(24, 48, 48))
    other = write_phantom_dataset(tmp_path / "other", n_labeled=0, n_unlabeled=0, n_tuning=1, shape=(12, 48, 48))
    out = tmp_path / "out"
    argv = [str(root), "--test", str(other), "--out", str(out), "--seeds", "0", "--encoder", "ddpm-ct-tiny"]
    argv += ["--weights", "none", "--steps", "2", "--views", "2", "--budget", "2", "--block", "4", "--gap", "1"]
    argv += ["--precision", "fp32"]
    assert z_features.main(argv) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {(r["variant"], r["protocol"]) for r in rows} == {
        (v, p) for v in ("2d", "2d+avg", "z6", "z6+avg") for p in ("within-volume", "cross-patient")
    }
    assert all(0.0 <= float(r["present_DSC"]) <= 1.0 for r in rows)
    assert all(float(r["neighbour_weight"]) > 0 for r in rows if r["arm"] == "z6")  # the fusion trained
    assert all(r["neighbour_weight"] == "" for r in rows if r["arm"] == "2d")
    summary = (out / "summary.md").read_text()
    assert "| z6 | within-volume |" in summary and "minus 2d" in summary
    assert z_features.main(argv) == 0  # the seed is in results.csv: skipped, same rows
    assert len(list(csv.DictReader((out / "results.csv").open()))) == len(rows)
    two = write_phantom_dataset(tmp_path / "two", n_labeled=2, n_unlabeled=0, shape=(24, 48, 48))
    with pytest.raises(SystemExit):  # two labeled scans: not one scan's held-out z blocks
        z_features.main([str(two), "--out", str(tmp_path / "x"), "--encoder", "ddpm-ct-tiny", "--weights", "none"])
