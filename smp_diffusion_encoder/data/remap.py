"""FLARE 2022 organ tables and conversion of other label conventions to FLARE ids.

FLARE 2022 ids (REFERENCE.md §2): 1 liver, 2 right kidney, 3 spleen, 4 pancreas, 5 aorta, 6 IVC,
7 right adrenal, 8 left adrenal, 9 gallbladder, 10 esophagus, 11 stomach, 12 duodenum, 13 left kidney.
This module is the one place these tables live; evaluation imports :data:`FLARE_ORGANS` from here.

Each source convention is a table ``{source_id: flare_id}``; :func:`remap_labels` applies it with a lookup
table, and every source id that is not in the table (organs FLARE does not score, unknown ids) becomes 0.

WORD (Luo et al. 2022, "WORD: a large scale dataset, benchmark and clinical applicable study for abdominal
organ segmentation from CT"): 1 liver, 2 spleen, 3 left kidney, 4 right kidney, 5 stomach, 6 gallbladder,
7 esophagus, 8 pancreas, 9 duodenum, 10 colon, 11 intestine, 12 adrenal, 13 rectum, 14 bladder,
15/16 head of femur L/R. WORD has no aorta or IVC and a single merged adrenal label (12) covering both glands.
We never guess a side: the merged adrenal is mapped to background (0), a warning is logged when it occurs,
and FLARE's aorta, IVC, RAG and LAG are simply absent from remapped WORD maps (score them as "not annotated",
not as "absent").

Example:
    >>> import numpy as np
    >>> remap_labels(np.array([0, 6, 3, 99], dtype=np.uint8), "amos").tolist()
    [0, 1, 13, 0]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal, get_args

import numpy as np

from smp_diffusion_encoder.errors import ConfigError

logger = logging.getLogger(__name__)

#: Short organ names as in FLARE 2022's CSV files; index ``i`` is label id ``i + 1``.
FLARE_ORGANS: tuple[str, ...] = (
    "Liver",
    "RK",
    "Spleen",
    "Pancreas",
    "Aorta",
    "IVC",
    "RAG",
    "LAG",
    "Gallbladder",
    "Esophagus",
    "Stomach",
    "Duodenum",
    "LK",
)

#: FLARE 2022 label id -> full organ name (0, background, is not listed).
FLARE_LABELS: dict[int, str] = {
    1: "liver",
    2: "right kidney",
    3: "spleen",
    4: "pancreas",
    5: "aorta",
    6: "inferior vena cava",
    7: "right adrenal gland",
    8: "left adrenal gland",
    9: "gallbladder",
    10: "esophagus",
    11: "stomach",
    12: "duodenum",
    13: "left kidney",
}

#: Number of classes including background (0..13).
FLARE_NUM_CLASSES: int = len(FLARE_ORGANS) + 1

LabelConvention = Literal["flare", "amos", "btcv", "totalsegmentator", "word"]


def _by_name(source_ids: Mapping[str, int]) -> dict[int, int]:
    """``{"Liver": 6, ...}`` (FLARE short name -> source id) -> ``{6: 1, ...}`` (source id -> FLARE id)."""
    table = {src: FLARE_ORGANS.index(name) + 1 for name, src in source_ids.items()}
    if len(table) != len(source_ids):
        raise AssertionError("two FLARE organs share a source id")  # a table typo, caught at import
    return table


#: Source id -> FLARE id, per convention (organs absent from a table map to 0).
#: BTCV has no duodenum label (its 13 organs include the portal/splenic vein, id 10, which FLARE does not
#: score); REFERENCE.md's "duodenum:13" for BTCV collides with LAG:13 and is not used.
CONVENTIONS: dict[str, dict[int, int]] = {
    "flare": {i: i for i in range(1, FLARE_NUM_CLASSES)},
    "amos": _by_name(
        {
            "Liver": 6,
            "RK": 2,
            "Spleen": 1,
            "Pancreas": 10,
            "Aorta": 8,
            "IVC": 9,
            "RAG": 11,
            "LAG": 12,
            "Gallbladder": 4,
            "Esophagus": 5,
            "Stomach": 7,
            "Duodenum": 13,
            "LK": 3,
        }
    ),
    "btcv": _by_name(
        {
            "Liver": 6,
            "RK": 2,
            "Spleen": 1,
            "Pancreas": 11,
            "Aorta": 8,
            "IVC": 9,
            "RAG": 12,
            "LAG": 13,
            "Gallbladder": 4,
            "Esophagus": 5,
            "Stomach": 7,
            "LK": 3,
        }
    ),
    "totalsegmentator": _by_name(
        {
            "Liver": 5,
            "RK": 2,
            "Spleen": 1,
            "Pancreas": 7,
            "Aorta": 52,
            "IVC": 63,
            "RAG": 8,
            "LAG": 9,
            "Gallbladder": 4,
            "Esophagus": 15,
            "Stomach": 6,
            "Duodenum": 19,
            "LK": 3,
        }
    ),
    "word": _by_name(
        {
            "Liver": 1,
            "Spleen": 2,
            "LK": 3,
            "RK": 4,
            "Stomach": 5,
            "Gallbladder": 6,
            "Esophagus": 7,
            "Pancreas": 8,
            "Duodenum": 9,
        }
    ),
}

#: Source ids that hold a FLARE organ but cannot be assigned one without guessing (dropped with a warning).
AMBIGUOUS_IDS: dict[str, dict[int, str]] = {
    "word": {12: "merged left+right adrenal gland (FLARE scores RAG and LAG separately)"},
}


def remap_labels(labels: np.ndarray, convention: LabelConvention | str) -> np.ndarray:
    """Map a label array of ``convention`` to FLARE 2022 ids (any shape; returns uint8, same shape).

    Ids not in the convention's table (other organs, unknown ids, negative values) become 0 (background).
    Raises :class:`ConfigError` for an unknown convention or a non-integer array.
    """
    table = _table(convention)
    array = np.asarray(labels)
    if not np.issubdtype(array.dtype, np.integer):
        raise ConfigError(f"remap_labels needs an integer label array, got dtype {array.dtype}")
    for source_id, what in AMBIGUOUS_IDS.get(convention, {}).items():
        if np.any(array == source_id):
            logger.warning("%s label %d is a %s: mapped to background", convention, source_id, what)
    if array.size == 0:
        return np.zeros(array.shape, dtype=np.uint8)
    lut = np.zeros(max(max(table), int(array.max())) + 1, dtype=np.uint8)
    lut[list(table)] = list(table.values())
    return np.where(array >= 0, lut[np.clip(array, 0, None)], 0).astype(np.uint8)


def _table(convention: str) -> dict[int, int]:
    try:
        return CONVENTIONS[convention]
    except KeyError:
        known = ", ".join(get_args(LabelConvention))
        raise ConfigError(f"unknown label convention {convention!r}; expected one of {known}") from None
