"""Label conventions -> FLARE 2022 ids."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from smp_diffusion_encoder.data.remap import (
    CONVENTIONS,
    FLARE_LABELS,
    FLARE_NUM_CLASSES,
    FLARE_ORGANS,
    remap_labels,
)
from smp_diffusion_encoder.errors import ConfigError


def test_flare_tables_agree() -> None:
    assert FLARE_NUM_CLASSES == 14 and len(FLARE_ORGANS) == 13 and sorted(FLARE_LABELS) == list(range(1, 14))
    assert FLARE_ORGANS[0] == "Liver" and FLARE_LABELS[1] == "liver"
    assert FLARE_ORGANS[12] == "LK" and FLARE_LABELS[13] == "left kidney"
    assert FLARE_ORGANS[2] == "Spleen" and FLARE_LABELS[3] == "spleen"


@pytest.mark.parametrize(
    "convention, source, flare",
    [
        ("amos", [1, 2, 3, 6, 10, 13, 14, 15], [3, 2, 13, 1, 4, 12, 0, 0]),
        ("btcv", [1, 3, 6, 10, 11, 12, 13], [3, 13, 1, 0, 4, 7, 8]),
        ("totalsegmentator", [5, 52, 63, 15, 19, 3, 2, 8, 9, 1, 42], [1, 5, 6, 10, 12, 13, 2, 7, 8, 3, 0]),
        ("word", [1, 2, 3, 4, 9, 10, 14, 16], [1, 3, 13, 2, 12, 0, 0, 0]),
        ("flare", list(range(14)) + [20], list(range(14)) + [0]),
    ],
)
def test_remap_tables(convention: str, source: list[int], flare: list[int]) -> None:
    out = remap_labels(np.array(source, dtype=np.int16), convention)
    assert out.dtype == np.uint8 and out.tolist() == flare


def test_every_table_is_injective_into_flare_ids() -> None:
    for name, table in CONVENTIONS.items():
        assert len(set(table.values())) == len(table), name
        assert set(table.values()) <= set(range(1, 14)), name


def test_remap_keeps_shape_on_volumes() -> None:
    vol = np.random.default_rng(0).integers(0, 120, (4, 5, 6)).astype(np.uint8)
    out = remap_labels(vol, "totalsegmentator")
    assert out.shape == vol.shape
    assert ((out == 1) == (vol == 5)).all() and ((out == 5) == (vol == 52)).all()


def test_word_merged_adrenal_is_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        out = remap_labels(np.array([12, 1]), "word")
    assert out.tolist() == [0, 1] and "merged left+right adrenal" in caplog.text


def test_unknown_convention_and_float_input() -> None:
    with pytest.raises(ConfigError, match=r"unknown label convention 'msd'"):
        remap_labels(np.zeros(3, np.uint8), "msd")
    with pytest.raises(ConfigError, match="integer label array"):
        remap_labels(np.zeros(3, np.float32), "amos")
