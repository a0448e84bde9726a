"""benchmarks/labeling_loop.py on tiny arguments (phantom, tiny encoder): the loop's rows, its invariants, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import labeling_loop
from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.study.results import read_results_csv

TINY = [
    "--encoder",
    "ddpm-ct-tiny",
    "--encoder-weights",
    "none",
    "--steps",
    "2",
    "--batch-size",
    "2",
    "--augment-views",
    "2",
    "--device",
    "cpu",
    "--precision",
    "fp32",
]


def test_evenly_and_random_picks_follow_their_rules() -> None:
    pool = {"A": list(range(10, 30))}
    assert labeling_loop.evenly_start(pool, 4) == [("A", 12), ("A", 17), ("A", 22), ("A", 27)]
    assert labeling_loop.evenly_next(pool, [("A", 12), ("A", 27)], 2) == [("A", 19), ("A", 23)]
    picks = labeling_loop.random_next(pool, [("A", 12)], 5, seed=0, round_=1)
    assert len(set(picks)) == 5 and ("A", 12) not in picks
    assert picks == labeling_loop.random_next(pool, [("A", 12)], 5, seed=0, round_=1)


def test_the_loop_runs_resumes_and_reveals_only_pool_slices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_phantom_dataset(tmp_path / "phantom", n_labeled=1, n_unlabeled=0, shape=(20, 48, 48))
    out = tmp_path / "loop"
    argv = [
        str(root),
        "--out",
        str(out),
        "--seeds",
        "0",
        "--start",
        "2",
        "--step",
        "2",
        "--max",
        "4",
        "--block",
        "3",
        "--gap",
        "1",
        "--min-distance-mm",
        "30",
        *TINY,
    ]
    assert labeling_loop.main(argv) == 0
    rows = read_results_csv(out / "results.csv")
    assert {(r["method"], r["n_train_slices"]) for r in rows} == {
        (s, n) for s in labeling_loop.STRATEGIES for n in (2, 4)
    }
    pool = {z for r in rows for _, z in json.loads(r["labeled"])}
    for r in rows:
        labeled, nxt = json.loads(r["labeled"]), json.loads(r["next"])
        assert len(labeled) == r["n_train_slices"] and not {tuple(p) for p in labeled} & {tuple(p) for p in nxt}
        assert len(nxt) == (2 if r["n_train_slices"] == 2 else 0)
        assert all(
            -1 <= float(r[f"rho_{m}"]) <= 1 or r[f"rho_{m}"] != r[f"rho_{m}"] for m in ("error", "tta", "area_error")
        )
    for s in labeling_loop.STRATEGIES:  # round 2's labeled = round 1's labeled + what it added
        first = next(r for r in rows if r["method"] == s and r["n_train_slices"] == 2)
        second = next(r for r in rows if r["method"] == s and r["n_train_slices"] == 4)
        grown = {tuple(p) for p in json.loads(first["labeled"]) + json.loads(first["next"])}
        assert grown == {tuple(p) for p in json.loads(second["labeled"])}
        pool |= {z for _, z in json.loads(second["labeled"])}
    summary = (out / "summary.md").read_text()
    assert "The loop's questions" in summary and (out / "dsc_vs_budget.png").is_file()
    for s in labeling_loop.STRATEGIES:  # the per-seed table: one row per strategy, a cell per round
        row = next(line for line in summary.splitlines() if line.startswith(f"| 0 | {s} |"))
        assert row.count("|") == 2 + 2 + 1 and "-" not in row.split("|")[3:5]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished round was trained again")

    monkeypatch.setattr(labeling_loop, "finetune", no_training)
    assert labeling_loop.main(argv) == 0  # resumed: everything is in results.csv
    assert len(read_results_csv(out / "results.csv")) == len(rows)


def test_a_set_of_labeled_slices_is_trained_once_per_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A strategy run later in the same --out reuses the start round another strategy trained."""
    root = write_phantom_dataset(tmp_path / "phantom", n_labeled=1, n_unlabeled=0, shape=(20, 48, 48))
    out = tmp_path / "loop"
    argv = [str(root), "--out", str(out), "--seeds", "0", "--start", "2", "--max", "2", "--block", "3", "--gap", "1"]
    argv += ["--check-measures", "error", *TINY]
    trained = []
    real = labeling_loop.finetune
    monkeypatch.setattr(labeling_loop, "finetune", lambda *a, **k: trained.append(k["split"]) or real(*a, **k))
    assert labeling_loop.main([*argv, "--strategies", "evenly"]) == 0
    assert labeling_loop.main([*argv, "--strategies", "random"]) == 0
    assert len(trained) == 1
    rows = read_results_csv(out / "results.csv")
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == {"evenly", "random"}
    for key in ("present_DSC", "labeled", "rho_error", "train_seconds"):
        assert str(by_method["evenly"][key]) == str(by_method["random"][key])


def test_a_later_run_with_a_larger_max_continues_from_the_last_round(tmp_path: Path) -> None:
    """The last round of a run chose no next slices; a later run going further chooses them then (evenly, random)
    and refuses to guess suggest's (its model is gone)."""
    root = write_phantom_dataset(tmp_path / "phantom", n_labeled=1, n_unlabeled=0, shape=(20, 48, 48))
    out = tmp_path / "loop"
    argv = [str(root), "--out", str(out), "--seeds", "0", "--start", "2", "--step", "2", "--block", "3", "--gap", "1"]
    argv += ["--check-measures", "error", "--min-distance-mm", "30", *TINY]
    assert labeling_loop.main([*argv, "--max", "2", "--strategies", "random", "suggest"]) == 0
    assert labeling_loop.main([*argv, "--max", "4", "--strategies", "random"]) == 0
    rows = read_results_csv(out / "results.csv")
    for r in rows:
        assert len(json.loads(r["labeled"])) == r["n_train_slices"]
    assert {(r["method"], r["n_train_slices"]) for r in rows} == {("random", 2), ("suggest", 2), ("random", 4)}
    with pytest.raises(SystemExit, match="suggest's 2-slice round of seed 0 chose no next slices"):
        labeling_loop.main([*argv, "--max", "4", "--strategies", "suggest"])
