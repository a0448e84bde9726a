"""Few-shot label budgets and reproducible slice splits (JSON in/out).

A budget says how many labeled 2D axial slices a segmentation head may train on (:meth:`LabelBudget.parse`):

* ``"4"`` - exactly 4 slices;
* ``"1%"``, ``"10%"`` - that share of the **eligible** labeled slices, rounded up, at least 1 (the paper
  does not define its "1%/10%"; this is our definition);
* ``"2cases"`` - every eligible slice of 2 whole cases;
* ``"all"`` - every eligible slice of every labeled case.

Slice-selection policy (:data:`POLICY_VERSION` ``"zstrat-v1"``; a committed policy is never changed, a new one
gets a new version):

1. Eligible slices are those whose label map contains at least one organ (id > 0).
2. The cases are shuffled with ``numpy.random.default_rng(seed)``; the ``n`` slices are dealt to them
   round-robin (case 1, 2, ..., C, 1, 2, ...), a case that runs out of eligible slices passing its turn.
3. Within a case that received ``k`` slices, its eligible z (ascending) are cut into ``k`` contiguous bins
   of near-equal count and one slice is drawn uniformly from each bin, so 4 slices never come from one
   spot: they are spread along z.
4. For ``"Ncases"`` the first N shuffled cases are taken whole.

Held-out split of ONE labeled volume (:func:`heldout_split`), used when only one labeled scan exists (the
realct benchmark): z is cut into alternating blocks ``train (block) | gap | eval (block) | gap | train ...``
starting at a seeded phase; the ``gap`` slices between a train and an eval block are dropped, so no
training slice is closer than ``gap + 1`` slices to an evaluation slice (no adjacent-slice leakage). Both
sides keep only eligible slices; a few-shot budget is then drawn from the train side.

Example:
    >>> split = select_slices({"A": range(10, 50), "B": range(5, 30)}, LabelBudget.parse("4"), seed=0)
    >>> len(split.train), split.budget
    (4, '4')
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from smp_diffusion_encoder._io import atomic_write_json, read_json_object
from smp_diffusion_encoder.errors import ConfigError, InputFileError

POLICY_VERSION = "zstrat-v1"
SPLIT_FORMAT = "smp_diffusion_encoder.split"
BudgetKind = Literal["slices", "percent", "cases", "all"]
_BUDGET_RE = re.compile(
    r"^\s*(?:(?P<all>all)|(?P<cases>\d+)\s*cases?|(?P<pct>\d+(?:\.\d+)?)\s*%|(?P<n>\d+))\s*$", re.IGNORECASE
)


@dataclass(frozen=True)
class LabelBudget:
    """A parsed label budget; ``text`` is the canonical string (``"4"``, ``"1%"``, ``"2cases"``, ``"all"``)."""

    kind: BudgetKind
    value: float

    @classmethod
    def parse(cls, text: str) -> LabelBudget:
        """Parse ``"4"``, ``"1%"``, ``"2cases"`` or ``"all"``; anything else raises :class:`ConfigError`."""
        m = _BUDGET_RE.match(str(text))
        if m is None:
            raise ConfigError(
                f"label budget {text!r}: expected a slice count ('4'), a percentage ('1%'), "
                f"a case count ('2cases') or 'all'"
            )
        if m["all"]:
            return cls("all", 0)
        kind, value = (
            ("cases", float(m["cases"]))
            if m["cases"]
            else ("percent", float(m["pct"]))
            if m["pct"]
            else ("slices", float(m["n"]))
        )
        if value <= 0 or (kind == "percent" and value > 100):
            raise ConfigError(f"label budget {text!r}: must be > 0" + (" and <= 100%" if kind == "percent" else ""))
        return cls(kind, value)  # type: ignore[arg-type]

    @property
    def text(self) -> str:
        if self.kind == "all":
            return "all"
        number = f"{self.value:g}"
        return {"slices": number, "percent": f"{number}%", "cases": f"{number}cases"}[self.kind]

    def n_slices(self, n_eligible: int) -> int:
        """Slices this budget asks for out of ``n_eligible`` (only for ``slices``/``percent`` budgets)."""
        if self.kind == "slices":
            return int(self.value)
        if self.kind == "percent":
            return max(1, math.ceil(self.value / 100 * n_eligible - 1e-9))
        raise ConfigError(f"label budget {self.text!r} is not a slice count")


@dataclass(frozen=True)
class Split:
    """A reproducible choice of labeled slices: ``(case_id, z)`` pairs, z in canonical slice order."""

    budget: str
    seed: int
    train: tuple[tuple[str, int], ...]
    evaluation: tuple[tuple[str, int], ...] = ()
    policy: str = POLICY_VERSION
    params: dict[str, Any] = field(default_factory=dict)

    def by_case(self, part: Literal["train", "evaluation"] = "train") -> dict[str, list[int]]:
        """``{case_id: sorted z}`` of one part."""
        out: dict[str, list[int]] = {}
        for case_id, z in getattr(self, part):
            out.setdefault(case_id, []).append(z)
        return {k: sorted(v) for k, v in sorted(out.items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SPLIT_FORMAT,
            "policy_version": self.policy,
            "budget": self.budget,
            "seed": self.seed,
            "params": self.params,
            "train": [[c, z] for c, z in self.train],
            "evaluation": [[c, z] for c, z in self.evaluation],
        }


def eligible_slices(labels: np.ndarray) -> list[int]:
    """Indices z of the slices of a ``(Z, Y, X)`` label map that contain at least one organ."""
    return np.flatnonzero(labels.reshape(labels.shape[0], -1).max(1) > 0).tolist() if labels.size else []


def select_slices(eligible: Mapping[str, Iterable[int]], budget: LabelBudget | str, seed: int = 0) -> Split:
    """Choose labeled slices under ``budget`` from ``{case_id: eligible z}`` (policy in the module docstring).

    Raises:
        ConfigError: no eligible slice, or the budget asks for more slices/cases than there are.
    """
    budget = LabelBudget.parse(budget) if isinstance(budget, str) else budget
    pools = {c: sorted(set(int(z) for z in zs)) for c, zs in sorted(eligible.items())}
    pools = {c: zs for c, zs in pools.items() if zs}
    total = sum(len(zs) for zs in pools.values())
    if not total:
        raise ConfigError("no eligible slice: no labeled case has a slice with an organ in it")
    rng = np.random.default_rng(seed)
    order = [list(pools)[i] for i in rng.permutation(len(pools))]
    if budget.kind in ("all", "cases"):
        n_cases = len(order) if budget.kind == "all" else int(budget.value)
        if n_cases > len(order):
            raise ConfigError(f"label budget {budget.text!r}: only {len(order)} labeled cases have organs")
        chosen = [(c, z) for c in sorted(order[:n_cases]) for z in pools[c]]
        return Split(budget.text, seed, tuple(chosen))
    n = budget.n_slices(total)
    if n > total:
        raise ConfigError(f"label budget {budget.text!r}: asks for {n} slices but only {total} are eligible")
    counts = dict.fromkeys(order, 0)
    while n:
        for c in order:
            if n and counts[c] < len(pools[c]):
                counts[c] += 1
                n -= 1
    chosen = []
    for c in sorted(order):
        for bin_ in np.array_split(np.asarray(pools[c]), counts[c]) if counts[c] else []:
            chosen.append((c, int(bin_[rng.integers(len(bin_))])))
    return Split(budget.text, seed, tuple(chosen))


def heldout_split(case_id: str, eligible: Iterable[int], *, block: int = 8, gap: int = 2, seed: int = 0) -> Split:
    """Train/evaluation split of ONE volume by alternating z blocks with ``gap`` dropped slices between.

    Slice ``z`` belongs to position ``(z + phase) % (2 * (block + gap))`` of the period
    ``[train x block][drop x gap][eval x block][drop x gap]``; ``phase`` is drawn from ``seed``. Every train
    slice is more than ``gap`` slices away from every evaluation slice.
    """
    if block < 1 or gap < 0:
        raise ConfigError(f"heldout split: block must be >= 1 and gap >= 0; got block={block}, gap={gap}")
    period = 2 * (block + gap)
    phase = int(np.random.default_rng(seed).integers(period))
    train, evaluation = [], []
    for z in sorted(set(int(z) for z in eligible)):
        pos = (z + phase) % period
        if pos < block:
            train.append((case_id, z))
        elif block + gap <= pos < 2 * block + gap:
            evaluation.append((case_id, z))
    if not train or not evaluation:
        raise ConfigError(f"heldout split of {case_id}: too few eligible slices for block={block}, gap={gap}")
    return Split("heldout", seed, tuple(train), tuple(evaluation), params={"block": block, "gap": gap, "phase": phase})


def write_split_json(path: str | os.PathLike[str], split: Split) -> Path:
    """Write ``split`` atomically as JSON; returns the path."""
    atomic_write_json(path, split.to_dict())
    return Path(path)


def read_split_json(path: str | os.PathLike[str]) -> Split:
    """Read and validate a split file; every problem raises an :class:`InputFileError` naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "split file does not exist")
    d = read_json_object(path)
    if d.get("format") != SPLIT_FORMAT:
        raise InputFileError(path, f'is not a split file (expected "format": "{SPLIT_FORMAT}")')
    if d.get("policy_version") != POLICY_VERSION:
        raise InputFileError(path, f"policy_version {d.get('policy_version')!r} is not {POLICY_VERSION!r}")
    if not isinstance(d.get("budget"), str) or type(d.get("seed")) is not int:
        raise InputFileError(path, 'needs a string "budget" and an integer "seed"')
    parts = {}
    for key in ("train", "evaluation"):
        pairs = d.get(key, [])
        if not isinstance(pairs, list) or not all(_is_pair(p) for p in pairs):
            raise InputFileError(path, f'"{key}" must be a list of [case_id, z] pairs with z an integer >= 0')
        parts[key] = tuple((str(c), int(z)) for c, z in pairs)
    if not parts["train"]:
        raise InputFileError(path, '"train" lists no slice')
    if len(set(parts["train"])) != len(parts["train"]) or set(parts["train"]) & set(parts["evaluation"]):
        raise InputFileError(path, "a (case_id, z) slice is listed twice or in both train and evaluation")
    return Split(
        d["budget"], d["seed"], parts["train"], parts["evaluation"], POLICY_VERSION, dict(d.get("params") or {})
    )


def _is_pair(p: Any) -> bool:
    return isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and type(p[1]) is int and p[1] >= 0


def split_from_label_maps(
    label_maps: Mapping[str, np.ndarray] | Sequence[tuple[str, np.ndarray]], budget: LabelBudget | str, seed: int = 0
) -> Split:
    """:func:`select_slices` over ``{case_id: (Z, Y, X) label map}``."""
    items = label_maps.items() if isinstance(label_maps, Mapping) else label_maps
    return select_slices({c: eligible_slices(lab) for c, lab in items}, budget, seed)
