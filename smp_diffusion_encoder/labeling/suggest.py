"""``suggest``: which axial slices of the user's scans to label next, and why.

Pipeline: scans (:mod:`~smp_diffusion_encoder.labeling.inputs`) -> the model's slices of every unlabeled slice
-> an uncertainty per slice (:mod:`~smp_diffusion_encoder.labeling.uncertainty`: cm² of the slice, or a Dice loss)
-> greedy picks kept ``min_distance_mm`` apart along z from each other and from labeled slices, spread over scans
(:mod:`~smp_diffusion_encoder.labeling.ranking`) -> files (:func:`write_suggestions`):

* ``suggestions.csv`` / ``suggestions.json``: one row per suggestion, best first: ``rank``, ``scan``, ``z`` (the
  canonical slice index, slice 0 nearest the feet: what sidecars list), ``slice_in_file`` (the index along the
  file's own slice axis, 0-based), ``position_mm`` (the slice's S coordinate, as 3D Slicer shows it),
  ``score`` (in the measure's unit: cm², or a Dice loss for ``dice``), ``effective`` (after spreading over
  scans), ``why``, ``image``; the JSON also holds the
  settings, the labeled slices that were avoided, the number of candidates and the time taken;
* ``contact_sheet.png``: the top suggestions with the current prediction and the uncertainty map
  (:mod:`~smp_diffusion_encoder.labeling.sheet`);
* ``sidecars/<scan>.slices.json``: per scan with suggestions, the labeled slices plus the suggested ones, ready
  to be copied beside the scan's label map once those slices are labeled
  (:mod:`~smp_diffusion_encoder.data.labeled_slices`).

Deterministic for a seed (the test-time augmentation and the order of equal scores are seeded; the model runs
in inference mode).

Example:
    >>> result = suggest(load_model("runs/r1/model"), find_scans(["scans/"]), SuggestConfig(n=4))  # doctest: +SKIP
    >>> write_suggestions(result, "suggestions/")                                                   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from smp_diffusion_encoder._io import atomic_write_json, atomic_write_text
from smp_diffusion_encoder.data.labeled_slices import slice_in_file, slice_positions_mm, write_sidecar
from smp_diffusion_encoder.data.remap import FLARE_LABELS
from smp_diffusion_encoder.data.volume import Volume
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.inference.model_dir import Segmenter
from smp_diffusion_encoder.labeling.config import SuggestConfig
from smp_diffusion_encoder.labeling.inputs import Scan, read_scan_images
from smp_diffusion_encoder.labeling.ranking import Candidate, Pick, rank_slices
from smp_diffusion_encoder.labeling.sheet import SheetEntry, render_contact_sheet
from smp_diffusion_encoder.labeling.uncertainty import UNITS, SliceUncertainty, measure_slices

COLUMNS = ("rank", "scan", "z", "slice_in_file", "position_mm", "score", "effective", "why", "image")
_PHRASES = {
    "error": "{:.1f} cm² the model expects to have labeled wrongly",
    "entropy": "{:.1f} nats x cm² of softmax entropy",
    "tta": "{:.1f} cm² where shifted, recontrasted views disagree",
    "dice": "expected Dice loss {:.2f} over the organs on the slice",
}


def score_text(measure: str, score: float) -> str:
    """A score with its unit, as the contact sheet titles it: ``12.3 cm²`` or ``Dice loss 0.42``."""
    return f"Dice loss {score:.2f}" if measure == "dice" else f"{score:.1f} {UNITS[measure]}"


@dataclass(frozen=True)
class Suggestion:
    """One slice to label (the columns of ``suggestions.csv``; see the module docstring)."""

    rank: int
    scan: str
    z: int
    slice_in_file: int
    position_mm: float
    score: float
    effective: float
    why: str
    image: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SuggestResult:
    """What :func:`suggest` found.

    Attributes:
        suggestions: best first.
        labeled: ``{scan: labeled z}`` avoided.
        scores: ``{scan: {z: score}}`` of every candidate slice (the measure's unit).
        candidates: how many slices were scored; ``seconds``: wall time of the scoring and ranking.
        sheet: the contact sheet's entries (the first ``config.sheet_slices`` suggestions).
    """

    suggestions: list[Suggestion]
    labeled: dict[str, list[int]]
    scores: dict[str, dict[int, float]]
    candidates: int
    seconds: float
    config: SuggestConfig
    sheet: list[SheetEntry] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "smp_diffusion_encoder.suggestions",
            "version": 1,
            "settings": self.config.to_dict(),
            "candidates": self.candidates,
            "seconds": round(self.seconds, 2),
            "labeled": {s: sorted(z) for s, z in self.labeled.items()},
            "suggestions": [s.to_dict() for s in self.suggestions],
        }


def suggest(
    model: Segmenter,
    scans: Sequence[Scan],
    config: SuggestConfig | None = None,
    *,
    labeled: Mapping[str, Iterable[int]] | None = None,
    images: Mapping[str, Volume] | None = None,
    candidates: Mapping[str, Iterable[int]] | None = None,
    progress: bool = False,
) -> SuggestResult:
    """Rank the unlabeled slices of ``scans`` for labeling with ``model`` (see the module docstring).

    Args:
        labeled: ``{scan_id: labeled z}`` (e.g. :func:`~smp_diffusion_encoder.labeling.inputs.labeled_slices`):
            never suggested, and no suggestion within ``config.min_distance_mm`` of one.
        images: the scans' canonical HU volumes by id (default: read them).
        candidates: ``{scan_id: z}`` to choose from (default: every slice); labeled ones are removed.

    Raises:
        ConfigError: a labeled or candidate slice outside its scan, an unknown scan id.
    """
    config = config or SuggestConfig()
    tick = time.perf_counter()
    images = dict(images) if images is not None else read_scan_images(scans)
    ids = {s.scan_id for s in scans}
    given = {str(k): {int(z) for z in v} for k, v in (labeled or {}).items()}
    allowed = {str(k): {int(z) for z in v} for k, v in candidates.items()} if candidates is not None else None
    for name, table in (("labeled", given), ("candidates", allowed or {})):
        for scan_id, zs in table.items():
            if scan_id not in ids:
                raise ConfigError(f"{name} names scan {scan_id!r}, which is not among the scans {sorted(ids)}")
            n = images[scan_id].array.shape[0]
            bad = sorted(z for z in zs if not 0 <= z < n)
            if bad:
                raise ConfigError(f"{name} slices z={bad} of {scan_id!r} are outside its {n} slices")
    measured: dict[str, tuple[list[int], SliceUncertainty]] = {}
    pool: list[Candidate] = []
    positions = {s.scan_id: slice_positions_mm(images[s.scan_id]) for s in scans}
    for scan in tqdm(scans, desc="scoring scans", unit="scan", disable=not progress):
        n = images[scan.scan_id].array.shape[0]
        zs = sorted(
            (allowed.get(scan.scan_id, set()) if allowed is not None else set(range(n)))
            - given.get(scan.scan_id, set())
        )
        if not zs:
            continue
        u = measure_slices(
            model,
            images[scan.scan_id],
            zs,
            config.measure,
            views=config.tta_views,
            seed=config.seed,
            batch_size=config.batch_size,
            device=config.device,
            precision=config.precision,
        )
        measured[scan.scan_id] = (zs, u)
        pool += [Candidate(scan.scan_id, z, float(positions[scan.scan_id][z]), float(s)) for z, s in zip(zs, u.scores)]
    labeled_mm = {s: [float(positions[s][z]) for z in sorted(zs)] for s, zs in given.items()}
    picks = rank_slices(
        pool,
        labeled_mm,
        config.n,
        min_distance_mm=config.min_distance_mm,
        scan_decay=config.scan_decay,
        seed=config.seed,
        labeled_z=given,
    )
    by_id = {s.scan_id: s for s in scans}
    suggestions, sheet = [], []
    for pick in picks:
        c = pick.candidate
        zs, u = measured[c.scan]
        i = zs.index(c.z)
        why = _why(pick, u.organ_share[i], config)
        suggestions.append(
            Suggestion(
                pick.rank,
                c.scan,
                c.z,
                slice_in_file(images[c.scan], c.z),
                round(c.position_mm, 2),
                round(c.score, 3),
                round(pick.effective, 3),
                why,
                str(by_id[c.scan].image),
            )
        )
        if len(sheet) < config.sheet_slices:
            sheet.append(
                SheetEntry(
                    u.images[i],
                    u.labels[i],
                    u.maps[i],
                    f"#{pick.rank} {c.scan} z={c.z} (S {c.position_mm:.1f} mm): {score_text(config.measure, c.score)}",
                )
            )
    scores = {s: {z: float(v) for z, v in zip(zs, u.scores)} for s, (zs, u) in measured.items()}
    return SuggestResult(
        suggestions,
        {s: sorted(z) for s, z in given.items()},
        scores,
        len(pool),
        time.perf_counter() - tick,
        config,
        sheet,
    )


def _why(pick: Pick, share: np.ndarray, config: SuggestConfig) -> str:
    organs = [int(k) for k in np.argsort(share)[::-1] if k > 0 and share[k] >= 0.1][:2]
    parts = [_PHRASES[config.measure].format(pick.candidate.score)]
    if organs:
        parts.append("mostly around the " + " and ".join(FLARE_LABELS[k] for k in organs))
    if pick.nearest_labeled_mm is None:
        parts.append("no slice of this scan is labeled yet")
    else:
        parts.append(f"{pick.nearest_labeled_mm:.0f} mm from the nearest labeled slice")
    if pick.scan_rank > 1:
        parts.append(f"pick {pick.scan_rank} of this scan (score x {config.scan_decay ** (pick.scan_rank - 1):.2f})")
    return "; ".join(parts)


def write_suggestions(result: SuggestResult, out_dir: str | Path) -> list[Path]:
    """Write ``suggestions.csv``, ``suggestions.json``, ``contact_sheet.png`` and ``sidecars/`` (module docstring);
    each file atomically. Returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(s.to_dict() for s in result.suggestions)
    written = [out / "suggestions.csv", out / "suggestions.json"]
    atomic_write_text(written[0], buffer.getvalue())
    atomic_write_json(written[1], result.to_dict())
    if result.sheet:
        n = len(result.suggestions)
        title = (
            f"{n} suggested slices (best first; {result.config.measure} measure, at least "
            f"{result.config.min_distance_mm:g} mm apart and from labeled slices)"
        )
        written.append(render_contact_sheet(result.sheet, out / "contact_sheet.png", title=title))
    chosen: dict[str, set[int]] = {}
    for s in result.suggestions:
        chosen.setdefault(s.scan, set()).add(s.z)
    for scan_id, zs in sorted(chosen.items()):
        written.append(
            write_sidecar(
                out / "sidecars" / f"{scan_id}.slices.json",
                zs | set(result.labeled.get(scan_id, ())),
                note=f"labeled slices and the {len(zs)} suggested by smp-diffusion suggest: copy "
                f"beside the scan's label map (as label.slices.json in a case folder) once "
                f"the suggested slices are labeled",
            )
        )
    return written
