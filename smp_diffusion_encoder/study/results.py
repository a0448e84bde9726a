"""Study results: the per-case rows of a few-shot study, their CSV file, and aggregation over seeds.

A study produces one row (a plain dict) per (method, budget, seed, evaluated case); ``results.csv`` holds
the same rows (columns :data:`RESULT_COLUMNS`, extra keys kept after them)::

    {"method": "ddpm-unet", "method_label": "ddpm-ct + Unet decoder (frozen)", "budget": "4",
     "n_train_slices": 4, "seed": 0, "case": "REALCT_Tr_0001", "protocol": "within-volume",
     "present_DSC": 0.74, "present_NSD": 0.66, "organs_present": "Liver RK Spleen ...",
     "mean_DSC": 0.71, "mean_NSD": 0.64, "train_seconds": 12.3, "Liver_DSC": 0.93, ..., "LK_DSC": 0.88, "Liver_NSD": 0.81, ..., "LK_NSD": 0.79}

Metrics lie in [0, 1] and may be ``nan``; every mean skips ``nan`` (as :func:`~smp_diffusion_encoder.evaluation.
summarize` does). ``present_DSC``/``present_NSD`` (the headline numbers) average the organs present in the
scored ground truth (``organs_present``); ``mean_DSC``/``mean_NSD`` average all 13 FLARE organs with the FLARE
evaluator's rule for an absent organ (1 when nothing is predicted there, else 0), so on a scan that holds a few
of the organs (the cross-patient scan has 7) they are dominated by the absent ones. On FLARE cases, which hold
all 13, both agree. ``protocol`` names the held-out set the row scores (``within-volume``, ``held-out cases``,
``cross-patient``); files written before it existed read as ``held-out``, and files without ``present_DSC``
fall back to ``mean_DSC`` (:attr:`BudgetResult.averaged_over` says which).

Example:
    >>> rows = read_results_csv("runs/study/results.csv")            # doctest: +SKIP
    >>> [(r.method, r.budget, round(r.dsc_mean, 3)) for r in aggregate(rows)]  # doctest: +SKIP
    [('ddpm-unet', '4', 0.512), ('ddpm-unet', '10%', 0.634)]
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smp_diffusion_encoder._io import atomic_write_text
from smp_diffusion_encoder.data.remap import FLARE_ORGANS
from smp_diffusion_encoder.errors import InputFileError

__all__ = [
    "RESULT_COLUMNS",
    "BudgetResult",
    "aggregate",
    "budget_slices",
    "nan_mean",
    "read_results_csv",
    "write_results_csv",
]

_TEXT_COLUMNS = ("method", "method_label", "budget", "case", "protocol", "organs_present")
#: The protocol of rows from files written before the column existed.
DEFAULT_PROTOCOL = "held-out"
_INT_COLUMNS = ("n_train_slices", "seed")
#: Column order of ``results.csv``; rows may carry more keys, written after these.
RESULT_COLUMNS: tuple[str, ...] = (
    "method",
    "method_label",
    "budget",
    "n_train_slices",
    "seed",
    "case",
    "protocol",
    "mean_DSC",
    "mean_NSD",
    "train_seconds",
    *(f"{organ}_DSC" for organ in FLARE_ORGANS),
    *(f"{organ}_NSD" for organ in FLARE_ORGANS),
)
_AGGREGATE_COLUMNS = (
    "method",
    "method_label",
    "budget",
    "case",
    *_INT_COLUMNS,
    "mean_DSC",
    "mean_NSD",
    *(f"{o}_DSC" for o in FLARE_ORGANS),
)


@dataclass(frozen=True)
class BudgetResult:
    """One method at one label budget on one protocol, aggregated over seeds.

    Attributes:
        protocol: the held-out set (``within-volume``, ``held-out cases``, ``cross-patient``).
        method, method_label: the method's id and its display name.
        budget: the budget as the study names it (``"4"``, ``"10%"``).
        n_train_slices: labeled training slices, mean over seeds (an ``int`` when all seeds agree).
        n_seeds: distinct seeds; n_cases: distinct evaluated cases.
        dsc_mean, dsc_std, nsd_mean, nsd_std: mean and population std over seeds of the per-seed mean over
            cases of ``present_DSC`` / ``present_NSD`` (``mean_DSC`` / ``mean_NSD`` for rows without them).
        organ_dsc: ``{organ: DSC}`` for every name in ``FLARE_ORGANS``: mean over seeds of the mean over cases.
        flare_dsc_mean: the same statistic of ``mean_DSC`` (13 organs, FLARE's rule for absent ones).
        averaged_over: ``"present organs"`` or ``"13 organs"`` (rows written before ``present_DSC`` existed).
    """

    protocol: str
    method: str
    method_label: str
    budget: str
    n_train_slices: int | float
    n_seeds: int
    n_cases: int
    dsc_mean: float
    dsc_std: float
    nsd_mean: float
    nsd_std: float
    organ_dsc: Mapping[str, float]
    flare_dsc_mean: float = math.nan
    averaged_over: str = "present organs"


def aggregate(rows: Sequence[Mapping[str, Any]]) -> list[BudgetResult]:
    """Group rows by (protocol, method, budget) and average them over cases, then over seeds (see the module doc).

    Protocols and methods keep their order of first appearance; each method's budgets are sorted by
    ``n_train_slices``. Raises ``ValueError`` naming the first row that lacks a needed column.
    """
    _require(rows, _AGGREGATE_COLUMNS)
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        key = (str(row.get("protocol") or DEFAULT_PROTOCOL), str(row["method"]), str(row["budget"]))
        groups.setdefault(key, []).append(row)
    results = [_aggregate_group(group) for group in groups.values()]
    protocols = {p: i for i, p in enumerate(dict.fromkeys(r.protocol for r in results))}
    order = {method: i for i, method in enumerate(dict.fromkeys(r.method for r in results))}
    return sorted(results, key=lambda r: (protocols[r.protocol], order[r.method], r.n_train_slices, r.budget))


def _aggregate_group(rows: list[Mapping[str, Any]]) -> BudgetResult:
    by_seed: dict[int, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_seed.setdefault(int(row["seed"]), []).append(row)

    def per_seed(column: str) -> list[float]:
        return [_nan_mean_std(float(r[column]) for r in seed_rows)[0] for seed_rows in by_seed.values()]

    slices = [float(np.mean([float(r["n_train_slices"]) for r in seed_rows])) for seed_rows in by_seed.values()]
    same = len(set(slices)) == 1 and slices[0].is_integer()
    present = all(r.get("present_DSC") not in (None, "") for r in rows)
    prefix = "present" if present else "mean"
    dsc_mean, dsc_std = _nan_mean_std(per_seed(f"{prefix}_DSC"))
    nsd_mean, nsd_std = _nan_mean_std(per_seed(f"{prefix}_NSD"))
    return BudgetResult(
        protocol=str(rows[0].get("protocol") or DEFAULT_PROTOCOL),
        method=str(rows[0]["method"]),
        method_label=str(rows[0]["method_label"]),
        budget=str(rows[0]["budget"]),
        n_train_slices=int(slices[0]) if same else float(np.mean(slices)),
        n_seeds=len(by_seed),
        n_cases=len({str(r["case"]) for r in rows}),
        dsc_mean=dsc_mean,
        dsc_std=dsc_std,
        nsd_mean=nsd_mean,
        nsd_std=nsd_std,
        organ_dsc={organ: _nan_mean_std(per_seed(f"{organ}_DSC"))[0] for organ in FLARE_ORGANS},
        flare_dsc_mean=_nan_mean_std(per_seed("mean_DSC"))[0],
        averaged_over="present organs" if present else f"{len(FLARE_ORGANS)} organs",
    )


def nan_mean(values: Iterable[float]) -> float:
    """Mean skipping ``nan`` (``nan`` when every value is ``nan``)."""
    return _nan_mean_std(values)[0]


def _nan_mean_std(values: Iterable[float]) -> tuple[float, float]:
    """``nan``-skipping mean and population std (``nan`` when every value is ``nan``)."""
    array = np.fromiter(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan input gives nan, on purpose
        return float(np.nanmean(array)), float(np.nanstd(array))


def _require(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    for index, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise ValueError(f"result row {index} lacks column(s) {_shorten(missing)}")


def _shorten(names: Sequence[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def budget_slices(results: Sequence[BudgetResult]) -> dict[str, int | float]:
    """Budget name -> training slices (of its first result), ordered by slices then name."""
    budgets: dict[str, int | float] = {}
    for r in results:
        budgets.setdefault(r.budget, r.n_train_slices)
    return dict(sorted(budgets.items(), key=lambda item: (item[1], item[0])))


def write_results_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write ``rows`` to a CSV, atomically: columns :data:`RESULT_COLUMNS`, then any extra keys; floats with
    4 decimals, ``nan`` as ``"nan"``. Returns ``path``."""
    rows = [row if "protocol" in row else {**row, "protocol": DEFAULT_PROTOCOL} for row in rows]
    _require(rows, RESULT_COLUMNS)
    columns = [*RESULT_COLUMNS, *dict.fromkeys(k for row in rows for k in row if k not in RESULT_COLUMNS)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_text(column, row.get(column, "")) for column in columns])
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def _csv_text(column: str, value: Any) -> str:
    if column in _TEXT_COLUMNS:
        return str(value)
    if column in _INT_COLUMNS:
        return str(int(value))
    if column in RESULT_COLUMNS or isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(float(value)) else f"{float(value):.4f}"
    return str(value)


def read_results_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Parse a CSV written by :func:`write_results_csv`: text columns stay ``str``, ``seed`` and
    ``n_train_slices`` become ``int``, metrics ``float``; extra columns become ``int``/``float`` where they parse.

    Raises:
        InputFileError: the file is missing, unreadable, lacks a column, or holds a malformed line or value.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError(path, "does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputFileError(path, f"cannot be read as UTF-8 text ({err})") from err
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
        if not header:
            raise InputFileError(path, "is empty; expected a header line starting with 'method,method_label'")
        missing = [c for c in RESULT_COLUMNS if c not in header and c != "protocol"]
        if missing:
            raise InputFileError(path, f"lacks column(s) {_shorten(missing)}")
        rows = []
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                raise InputFileError(path, f"line {reader.line_num} has {len(fields)} fields, header {len(header)}")
            row = {c: _parse(c, v, path, reader.line_num) for c, v in zip(header, fields, strict=True)}
            row.setdefault("protocol", DEFAULT_PROTOCOL)
            rows.append(row)
    except csv.Error as err:
        raise InputFileError(path, f"is not valid CSV ({err})") from err
    return rows


def _parse(column: str, text: str, path: Path, line: int) -> Any:
    if column in _TEXT_COLUMNS:
        return text
    kinds = (int,) if column in _INT_COLUMNS else (float,) if column in RESULT_COLUMNS else (int, float)
    for kind in kinds:
        with contextlib.suppress(ValueError):
            return kind(text)
    if column not in RESULT_COLUMNS:
        return text
    expected = "an integer" if column in _INT_COLUMNS else "a number"
    raise InputFileError(path, f"line {line}: {column} is {text!r}, expected {expected}")
