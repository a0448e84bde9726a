"""benchmarks/measure_check.py on tiny arguments: a tiny model trained on the phantom, every measure checked."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from benchmarks import measure_check
from smp_diffusion_encoder.data.flare import FlareDataset
from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.finetune import FinetuneConfig, finetune


def test_every_measure_is_ranked_against_the_truth_on_untrained_slices(tmp_path: Path) -> None:
    root = write_phantom_dataset(tmp_path / "phantom", n_labeled=1, n_unlabeled=0, shape=(20, 48, 48))
    (case,) = FlareDataset.discover(root).labeled
    config = FinetuneConfig(
        method="unet", encoder="ddpm-ct-tiny", encoder_weights=None, budget="3", steps=2, batch_size=2, augment_views=2
    )
    finetune([case], config, out_dir=tmp_path / "run", progress=False)
    out = tmp_path / "check"
    argv = [str(root), str(tmp_path / "run"), "--out", str(out), "--block", "3", "--gap", "1", "--precision", "fp32"]
    assert measure_check.main(argv) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["set"] for r in rows] == ["pool", "organs"]
    for r in rows:
        assert r["trained"] == "3" and int(r["slices"]) >= 3
        values = [float(r[f"rho_{k}{m}"]) for k in ("", "area_") for m in ("error", "entropy", "tta", "dice")]
        finite = [v for v in values if math.isfinite(v)]  # nan: a constant score or error (no rank to compare)
        assert finite and all(-1.0 <= v <= 1.0 for v in finite)
    assert "`dice` vs dsc" in (out / "summary.md").read_text()
    with pytest.raises(SystemExit):  # not a run folder
        measure_check.main([str(root), str(tmp_path), "--out", str(out)])
