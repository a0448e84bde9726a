"""benchmarks/ensemble.py on tiny arguments: every member and the ensemble scored, models deleted, resumable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from benchmarks import ensemble
from smp_diffusion_encoder.data.phantom import write_phantom_dataset


def test_members_share_the_slices_and_the_ensemble_is_scored(tmp_path: Path) -> None:
    root = write_phantom_dataset(tmp_path / "train", n_labeled=1, n_unlabeled=0, shape=(24, 48, 48))
    other = write_phantom_dataset(tmp_path / "other", n_labeled=0, n_unlabeled=0, n_tuning=1, shape=(12, 48, 48))
    out = tmp_path / "out"
    argv = [str(root), "--test", str(other), "--out", str(out), "--seeds", "0", "--members", "2"]
    argv += ["--encoder", "ddpm-ct-tiny", "--weights", "none", "--steps", "2", "--views", "2", "--budget", "2"]
    argv += ["--block", "4", "--gap", "1", "--precision", "fp32"]
    assert ensemble.main(argv) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {(r["variant"], r["protocol"]) for r in rows} == {
        (v, p) for v in ("member 0", "member 1", "ensemble") for p in ("within-volume", "cross-patient")
    }
    assert all(0.0 <= float(r["present_DSC"]) <= 1.0 for r in rows)
    assert len(json.loads((out / "runs" / "seed0" / "split.json").read_text())["train"]) == 2
    assert not (out / "runs" / "seed0" / "members").exists()  # scored, then deleted
    assert not (out / "runs" / "seed0" / "model").exists()
    assert "| within-volume |" in (out / "summary.md").read_text()
    assert ensemble.main(argv) == 0  # resumed: the seed is skipped
    assert len(list(csv.DictReader((out / "results.csv").open()))) == len(rows)
    with pytest.raises(SystemExit):
        ensemble.main([*argv[:-2], "--members", "1"])
