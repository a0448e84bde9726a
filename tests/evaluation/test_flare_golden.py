"""Our FLARE 2022 metrics reproduce the official evaluation script's numbers on real label maps.

Needs ``shared/data/realct/golden`` beside the repository (or ``SMP_DIFFUSION_REALCT`` pointing at the
``realct`` folder); skipped when absent.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from smp_diffusion_encoder.evaluation import METRIC_COLUMNS, evaluate_folder, write_metrics_csv

pytestmark = pytest.mark.realct


def _golden_dir() -> Path:
    env = os.environ.get("SMP_DIFFUSION_REALCT")
    realct = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared/data/realct"
    return realct / "golden"


GOLDEN = _golden_dir()


@pytest.mark.skipif(not (GOLDEN / "official_flare22_metrics.csv").is_file(), reason=f"{GOLDEN} is absent")
def test_matches_official_flare22_csv(tmp_path: Path) -> None:
    with open(GOLDEN / "official_flare22_metrics.csv", newline="") as fh:
        official = {row["Name"]: row for row in csv.DictReader(fh)}
    results = evaluate_folder(GOLDEN / "pred", GOLDEN / "gt", progress=False)
    assert sorted(r.name for r in results) == sorted(official)

    out = tmp_path / "metrics.csv"
    write_metrics_csv(results, out)
    with open(out, newline="") as fh:
        ours = {row["Name"]: row for row in csv.DictReader(fh)}
    assert tuple(next(csv.reader(out.open()))) == METRIC_COLUMNS

    mismatches = []
    for name, row in official.items():
        for column in METRIC_COLUMNS[1:]:
            diff = abs(float(ours[name][column]) - float(row[column]))
            if diff > 5e-5:
                mismatches.append(f"{name} {column}: ours {ours[name][column]} official {row[column]}")
    assert not mismatches, "\n".join(mismatches)
