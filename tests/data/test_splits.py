"""Few-shot budgets, z-stratified slice selection, held-out split, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smp_diffusion_encoder.data.splits import (
    POLICY_VERSION,
    LabelBudget,
    eligible_slices,
    heldout_split,
    read_split_json,
    select_slices,
    split_from_label_maps,
    write_split_json,
)
from smp_diffusion_encoder.errors import ConfigError, CorruptFileError, InputFileError

POOLS = {"A": range(10, 70), "B": range(0, 40), "C": range(20, 41)}  # 60 + 40 + 21 = 121 eligible


@pytest.mark.parametrize(
    ("text", "kind", "canonical"),
    [
        ("4", "slices", "4"),
        ("1%", "percent", "1%"),
        ("12.5 %", "percent", "12.5%"),
        ("2cases", "cases", "2cases"),
        ("3 case", "cases", "3cases"),
        ("ALL", "all", "all"),
    ],
)
def test_parse_budget(text: str, kind: str, canonical: str) -> None:
    b = LabelBudget.parse(text)
    assert b.kind == kind and b.text == canonical


@pytest.mark.parametrize("bad", ["", "0", "-3", "150%", "4 slices", "two", "0cases"])
def test_parse_budget_rejects(bad: str) -> None:
    with pytest.raises(ConfigError, match="budget"):
        LabelBudget.parse(bad)


def test_percent_counts_eligible_slices_rounded_up() -> None:
    assert LabelBudget.parse("1%").n_slices(121) == 2
    assert LabelBudget.parse("10%").n_slices(50) == 5
    assert LabelBudget.parse("1%").n_slices(3) == 1
    assert len(select_slices(POOLS, "10%", seed=0).train) == 13


def test_four_slices_spread_over_cases_and_z() -> None:
    split = select_slices({"A": range(0, 80)}, "4", seed=1)
    zs = [z for _, z in split.train]
    assert [z // 20 for z in zs] == [0, 1, 2, 3]  # one slice per quarter of the eligible range
    multi = select_slices(POOLS, "4", seed=1).by_case()
    assert sorted(len(v) for v in multi.values()) == [1, 1, 2]  # round-robin over the 3 cases
    for case, zs in multi.items():
        assert set(zs) <= set(POOLS[case])


def test_seeded_and_reproducible() -> None:
    a, b = select_slices(POOLS, "10", seed=3), select_slices(POOLS, "10", seed=3)
    assert a == b
    assert {select_slices(POOLS, "10", seed=s).train for s in range(5)}.__len__() > 1


def test_cases_and_all_budgets() -> None:
    two = select_slices(POOLS, "2cases", seed=0).by_case()
    assert len(two) == 2 and all(zs == list(POOLS[c]) for c, zs in two.items())
    assert len(select_slices(POOLS, "all").train) == 121
    with pytest.raises(ConfigError, match="only 3 labeled cases"):
        select_slices(POOLS, "4cases")
    with pytest.raises(ConfigError, match="122 slices but only 121"):
        select_slices(POOLS, "122")


def test_only_slices_with_organs_are_eligible() -> None:
    labels = np.zeros((6, 4, 4), np.uint8)
    labels[2, 1, 1] = 5
    labels[4, 0, 3] = 1
    assert eligible_slices(labels) == [2, 4]
    split = split_from_label_maps({"X": labels, "Y": np.zeros((3, 4, 4), np.uint8)}, "all")
    assert split.train == (("X", 2), ("X", 4))
    with pytest.raises(ConfigError, match="no eligible slice"):
        split_from_label_maps({"Y": np.zeros((3, 4, 4), np.uint8)}, "1")


@pytest.mark.parametrize(("block", "gap"), [(4, 1), (8, 2), (3, 0)])
def test_heldout_blocks_have_no_adjacent_leakage(block: int, gap: int) -> None:
    split = heldout_split("R", range(5, 100), block=block, gap=gap, seed=2)
    train = np.array([z for _, z in split.train])
    ev = np.array([z for _, z in split.evaluation])
    assert np.abs(train[:, None] - ev[None, :]).min() == gap + 1
    assert abs(len(train) - len(ev)) <= block and len(train) + len(ev) > 95 * block / (block + gap) - 2 * block
    assert split == heldout_split("R", range(5, 100), block=block, gap=gap, seed=2)
    few = select_slices(split.by_case("train"), "4", seed=0)
    assert {z for _, z in few.train} <= set(train.tolist())


def test_json_round_trip_and_validation(tmp_path) -> None:
    split = heldout_split("R", range(50), block=5, gap=2, seed=1)
    path = write_split_json(tmp_path / "split.json", split)
    assert read_split_json(path) == split
    d = json.loads(path.read_text())
    assert d["policy_version"] == POLICY_VERSION and d["budget"] == "heldout" and d["seed"] == 1
    for mutate, msg in [
        (lambda d: d.update(policy_version="zstrat-v0"), "policy_version"),
        (lambda d: d.update(train=[["R", -1]]), "train"),
        (lambda d: d.update(train=[["R", 1.5]]), "train"),
        (lambda d: d.update(train=[]), "no slice"),
        (lambda d: d.update(evaluation=d["train"][:1]), "both"),
        (lambda d: d.pop("seed"), "seed"),
        (lambda d: d.pop("format"), "not a split file"),
    ]:
        bad = json.loads(path.read_text())
        mutate(bad)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(InputFileError, match=msg) as err:
            read_split_json(tmp_path / "bad.json")
        assert "bad.json" in str(err.value)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="broken.json"):
        read_split_json(tmp_path / "broken.json")
    with pytest.raises(InputFileError, match="does not exist"):
        read_split_json(tmp_path / "missing.json")
