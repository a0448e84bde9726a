"""The labeling loop, simulated: label a few slices, train, choose more, label those, retrain; three ways to choose.

On one labeled scan (realct) the within-volume split of :func:`smp_diffusion_encoder.study.protocol.holdout` gives
the train-side pool (alternating z blocks) and the held-out blocks. Per seed the loop starts from ``--start``
slices evenly spaced over the pool, trains with the library's default recipe (:func:`smp_diffusion_encoder.
finetune.finetune` with ``FinetuneConfig()``'s defaults and the labeled slices as a given ``split=``), scores the
model within the volume (held-out blocks) and on ``--test`` scans (scoring only, never selection), then adds
``--step`` slices chosen from the pool's unlabeled slices by each strategy, revealing only their labels, up to
``--max``:

* ``suggest``: :func:`smp_diffusion_encoder.labeling.suggest` with the model just trained (``--measure``; slices
  at least ``--min-distance-mm`` from labeled ones and each other; where the small pool cannot give ``--step``
  slices that far apart, the distance steps down (x0.6, x0.4, x0.2, 0) and the row records the one used);
* ``evenly``: each new slice as far as possible (along z) from every labeled one: evenly spaced, kept so;
* ``random``: uniformly among the pool's unlabeled slices (seeded).

A set of labeled slices is trained once per seed and shared by the strategies that reach it (the start round;
a round where suggest and evenly chose the same slices; a strategy run later in the same ``--out``). Each model
is also checked against the truth it was not given: the rank correlation (Spearman) between each uncertainty measure of
:mod:`smp_diffusion_encoder.labeling.uncertainty` and the slices' real error (1 - slice DSC) on the pool's
unlabeled slices (``rho_<measure>`` columns): does the measure find the slices the model gets wrong?

Writes ``OUT/results.csv`` (the study's row format: ``method`` is the strategy, ``budget`` the labeled slices; plus
``labeled``, ``next``, ``distance_mm``, ``select_seconds`` and the ``rho_*`` columns), ``OUT/summary.md`` and
``OUT/dsc_vs_budget.png`` (:func:`smp_diffusion_encoder.study.report.write_report`). Rounds already in
results.csv are skipped, so a restart continues (what each round added is in its row).

    python -m benchmarks.labeling_loop ../shared/data/realct --test ../shared/data/realct_extra/crosspatient \\
        --out benchmarks/results/labeling_loop
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import smp_diffusion_encoder  # noqa: F401  (registers the encoders)
from benchmarks._loop_report import loop_section, number
from benchmarks._machine import describe_machine, today
from smp_diffusion_encoder._io import atomic_write_text
from smp_diffusion_encoder.cli._args import add_config_arguments, given
from smp_diffusion_encoder.data.flare import Case, find_labeled_cases
from smp_diffusion_encoder.data.labeled_slices import slice_positions_mm
from smp_diffusion_encoder.data.preprocessing import SliceGeometry
from smp_diffusion_encoder.data.remap import FLARE_NUM_CLASSES, FLARE_ORGANS
from smp_diffusion_encoder.data.splits import Split
from smp_diffusion_encoder.data.volume import Volume, read_volume
from smp_diffusion_encoder.errors import one_line_warning
from smp_diffusion_encoder.evaluation import slice_dice
from smp_diffusion_encoder.finetune import FinetuneConfig, finetune
from smp_diffusion_encoder.inference import Segmenter, load_model
from smp_diffusion_encoder.labeling import Scan, SuggestConfig, measure_slices, suggest
from smp_diffusion_encoder.labeling.ranking import Candidate, rank_slices
from smp_diffusion_encoder.labeling.uncertainty import (
    MEASURES,
    from_probabilities,
    model_slices,
    pixel_area_cm2,
    probabilities,
)
from smp_diffusion_encoder.study.config import StudyConfig
from smp_diffusion_encoder.study.protocol import CROSS_PATIENT, holdout, organs_present, score
from smp_diffusion_encoder.study.report import write_report
from smp_diffusion_encoder.study.results import nan_mean, read_results_csv, write_results_csv

STRATEGIES = ("suggest", "evenly", "random")
LABELS = {"suggest": "smp-diffusion suggest", "evenly": "evenly spaced along z", "random": "random slices"}
Pair = tuple[str, int]


def evenly_start(pool: dict[str, list[int]], n: int) -> list[Pair]:
    """``n`` slices at evenly spaced quantiles of the pool (cases in turn, then z)."""
    flat = [(c, z) for c in sorted(pool) for z in sorted(pool[c])]
    return sorted({flat[min(len(flat) - 1, int((i + 0.5) * len(flat) / n))] for i in range(n)})


def evenly_next(pool: dict[str, list[int]], labeled: Sequence[Pair], n: int) -> list[Pair]:
    """Farthest-point picks: each new slice maximizes its z distance to the nearest labeled (or picked) slice of its
    case (a case without any: infinitely far); ties go to the lower case id and z."""
    chosen = set(labeled)
    out: list[Pair] = []
    for _ in range(n):
        free = [(c, z) for c in sorted(pool) for z in sorted(pool[c]) if (c, z) not in chosen]
        if not free:
            break

        def gap(p: Pair) -> float:
            mine = [z for c, z in chosen if c == p[0]]
            return min((abs(p[1] - z) for z in mine), default=math.inf)

        best = max(free, key=lambda p: (gap(p), -free.index(p)))
        chosen.add(best)
        out.append(best)
    return out


def random_next(pool: dict[str, list[int]], labeled: Sequence[Pair], n: int, seed: int, round_: int) -> list[Pair]:
    free = [(c, z) for c in sorted(pool) for z in sorted(pool[c]) if (c, z) not in set(labeled)]
    rng = np.random.default_rng([seed, round_, 17])
    return sorted(free[i] for i in rng.choice(len(free), size=min(n, len(free)), replace=False))


def suggest_next(
    model: Segmenter,
    cases: Sequence[Case],
    images: dict[str, Volume],
    pool: dict[str, list[int]],
    labeled: Sequence[Pair],
    n: int,
    args: argparse.Namespace,
    seed: int,
) -> tuple[list[Pair], float]:
    """``n`` picks of :func:`suggest` on the pool, and the distance kept: ``--min-distance-mm``, or where that
    leaves fewer than ``n`` slices the largest of its x0.6, x0.4, x0.2, x0 that does (the same scores ranked again
    by the same rule, :func:`~smp_diffusion_encoder.labeling.ranking.rank_slices`)."""
    scans = [Scan(c.case_id, c.image) for c in cases]
    have = {c.case_id: [z for cc, z in labeled if cc == c.case_id] for c in cases}
    config = SuggestConfig(
        n=n,
        measure=args.measure,
        min_distance_mm=args.min_distance_mm,
        seed=seed,
        sheet_slices=0,
        device=args.device,
        precision=args.precision,
    )
    result = suggest(model, scans, config, labeled=have, images=images, candidates=pool)
    picks = [(s.scan, s.z) for s in result.suggestions]
    distance = args.min_distance_mm
    if len(picks) < n:
        positions = {c: slice_positions_mm(images[c]) for c in result.scores}
        candidates = [
            Candidate(c, z, float(positions[c][z]), v) for c, zs in result.scores.items() for z, v in sorted(zs.items())
        ]
        labeled_mm = {c: [float(slice_positions_mm(images[c])[z]) for z in zs] for c, zs in have.items()}
        for factor in (0.6, 0.4, 0.2, 0.0):
            distance = args.min_distance_mm * factor
            ranked = rank_slices(
                candidates,
                labeled_mm,
                n,
                min_distance_mm=distance,
                scan_decay=config.scan_decay,
                seed=seed,
                labeled_z=have,
            )
            picks = [(p.candidate.scan, p.candidate.z) for p in ranked]
            if len(picks) >= n:
                break
    return sorted(picks), distance


def measure_check(
    model: Segmenter,
    images: dict[str, Volume],
    truth: dict[str, Volume],
    free: dict[str, list[int]],
    seed: int,
    measures: Sequence[str],
    *,
    device: str = "auto",
    precision: str = "auto",
) -> dict[str, float]:
    """Spearman correlation of each measure with the slices' real error on the unlabeled pool slices ``free``
    (model space; the truth is read for this check only: no strategy sees it), against two kinds of error:
    ``rho_<measure>``: 1 - slice DSC over the organs in the truth or the prediction (what a Dice score rewards:
    small organs weigh as much as the liver); ``rho_area_<measure>``: the wrongly labeled area in cm² (what the
    area measures estimate: the ``error`` measure is the expected wrong area). ``measures``: which to check (tta
    costs its views' passes); empty: none. Also used by ``benchmarks/measure_check.py`` on saved models."""
    from scipy.stats import spearmanr

    if not measures:
        return {}
    scores: dict[str, list[float]] = {m: [] for m in MEASURES}
    errors: dict[str, list[float]] = {m: [] for m in MEASURES}
    wrong: dict[str, list[float]] = {m: [] for m in MEASURES}
    for case_id, zs in free.items():
        if not zs:
            continue
        image = images[case_id]
        gt = SliceGeometry.of(image, model.preprocessing).label_slices(truth[case_id])[zs]
        slices, _ = model_slices(model, image, zs)
        prob = probabilities(model, slices, device=device, precision=precision)  # one pass, 3 measures
        area = pixel_area_cm2(model, image)
        found = {m: from_probabilities(slices, prob, m, area) for m in ("error", "entropy", "dice")}
        if "tta" in measures:
            found["tta"] = measure_slices(model, image, zs, "tta", seed=seed, device=device, precision=precision)
        real = [1.0 - _slice_dsc(t, p) for t, p in zip(gt, found["error"].labels)]  # what predict would give
        wrong_cm2 = [float((t != p).sum()) * area for t, p in zip(gt, found["error"].labels)]
        for m, u in found.items():
            scores[m] += u.scores.tolist()
            errors[m] += real
            wrong[m] += wrong_cm2
    out: dict[str, float] = {}
    for m in measures:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            enough = len(scores[m]) >= 3
            out[f"rho_{m}"] = float(spearmanr(scores[m], errors[m]).statistic) if enough else math.nan
            out[f"rho_area_{m}"] = float(spearmanr(scores[m], wrong[m]).statistic) if enough else math.nan
    return out


def _slice_dsc(gt: np.ndarray, pred: np.ndarray) -> float:
    present = np.zeros(FLARE_NUM_CLASSES, bool)
    present[np.unique(gt)] = present[np.unique(pred)] = True
    present[0] = False
    return float(slice_dice(gt, pred, FLARE_NUM_CLASSES)[present].mean()) if present.any() else 1.0


def train_and_score(
    plan: Any, labeled: list[Pair], seed: int, run_dir: Path, cfg: dict[str, Any], args: argparse.Namespace
) -> tuple[Segmenter, list[dict[str, Any]], float]:
    if run_dir.exists():  # an interrupted round: start it again
        shutil.rmtree(run_dir)
    tick = time.perf_counter()
    config = FinetuneConfig(**{**cfg, "budget": str(len(labeled)), "seed": seed})
    finetune(
        plan.train_cases,
        config,
        out_dir=run_dir,
        split=Split("loop", seed, tuple(labeled)),
        progress=False,
        cache_dir=args.out / "feature_cache",
    )
    seconds = time.perf_counter() - tick
    model = load_model(run_dir / "model")
    scored = [(plan.protocol, case, zs) for case, zs in plan.evaluation]
    scored += [(CROSS_PATIENT, case, ()) for case in plan.tests]
    rows = []
    for protocol, case, zs in scored:
        metrics, gt, _, _ = score(model, case, zs, device=args.device, precision=args.precision)
        present = organs_present(gt)
        rows.append(
            {
                "protocol": protocol,
                "case": case.case_id,
                "present_DSC": nan_mean(metrics[f"{o}_DSC"] for o in present),
                "present_NSD": nan_mean(metrics[f"{o}_NSD"] for o in present),
                "organs_present": " ".join(present),
                "mean_DSC": nan_mean(metrics[f"{o}_DSC"] for o in FLARE_ORGANS),
                "mean_NSD": nan_mean(metrics[f"{o}_NSD"] for o in FLARE_ORGANS),
                "train_seconds": round(seconds, 1),
                **metrics,
            }
        )
    return model, rows, seconds


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = one_line_warning
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="FLARE-layout root (or case folder) with one labeled scan")
    p.add_argument("--out", type=Path, required=True, help="output folder (resumable)")
    p.add_argument("--test", type=Path, nargs="*", default=[], metavar="PATH", help="other labeled scans, scored only")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--start", type=int, default=4, help="labeled slices at the start (evenly spaced)")
    p.add_argument("--step", type=int, default=4, help="slices added per round")
    p.add_argument("--max", type=int, default=16, help="labeled slices at the end")
    p.add_argument("--measure", default="error", choices=MEASURES, help="suggest's uncertainty measure")
    p.add_argument(
        "--min-distance-mm",
        type=float,
        default=SuggestConfig().min_distance_mm,
        help="suggest's distance (steps down where the pool is too small; default: suggest's)",
    )
    p.add_argument("--block", type=int, default=StudyConfig().block, help="held-out z blocks (study.holdout)")
    p.add_argument("--gap", type=int, default=StudyConfig().gap)
    p.add_argument("--holdout-seed", type=int, default=0)
    p.add_argument(
        "--check-measures",
        nargs="*",
        default=list(MEASURES),
        choices=MEASURES,
        help="measures whose rank correlation with the real slice error is reported (tta: 4 more passes)",
    )
    p.add_argument("--keep-models", action="store_true")
    p.add_argument("--report-only", action="store_true", help="train nothing: report OUT/results.csv")
    p.add_argument("--note", default="", help="text added to the report's context (e.g. how the rows were made)")
    add_config_arguments(p, FinetuneConfig, exclude=("budget", "seed", "val_fraction", "label_table"))
    args = p.parse_args(argv)
    cfg = given(args, FinetuneConfig)
    args.device = cfg.get("device", "auto")
    args.precision = cfg.get("precision", "auto")
    start_time = time.perf_counter()
    study = StudyConfig(block=args.block, gap=args.gap, holdout_seed=args.holdout_seed)
    tests = [case for path in args.test for case in find_labeled_cases(path)]
    plan = holdout(args.root, study, tests=tests)
    pool = {c: sorted(zs) for c, zs in plan.pool.items()}
    print(f"held-out data: {plan.description}; pool {sum(map(len, pool.values()))} slices", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / "results.csv"
    rows = read_results_csv(csv_path) if csv_path.is_file() else []
    rounds = list(range(args.start, args.max + 1, args.step))
    if not args.report_only:
        images = {c.case_id: read_volume(c.image) for c in plan.train_cases}
        truth = {c.case_id: read_volume(c.label, kind="label") for c in plan.train_cases}  # for rho only
        for seed in args.seeds:
            rows = run_seed(plan, pool, images, truth, rounds, seed, rows, cfg, args, csv_path)
    elapsed = time.perf_counter() - start_time
    given_argv = list(argv if argv is not None else sys.argv[1:])
    if "--note" in given_argv:  # the note is printed once, after the command
        del given_argv[given_argv.index("--note") : given_argv.index("--note") + 2]
    command = " ".join(["python -m benchmarks.labeling_loop", *given_argv])
    context = (
        f"Data: `{args.root}`; {plan.description}. Loop: {args.start} evenly spaced slices of the pool, "
        f"+{args.step} per round up to {args.max}; strategies {', '.join(args.strategies)}; suggest measure "
        f"`{args.measure}`, min distance {args.min_distance_mm:g} mm (stepping down where the pool is too "
        f"small). Fine-tuning: FinetuneConfig defaults{' with ' + str(cfg) if cfg else ''}. Machine: "
        f"{describe_machine(args.device)}; {today()}; this invocation took {elapsed / 60:.1f} min (rounds "
        f"already in results.csv are reused). Command: `{command}`. {args.note}"
    )
    if rows:
        summary = write_report(
            rows, args.out, title="The labeling loop: DSC against labeled slices per strategy", context=context
        )
        section = loop_section(rows, rounds)
        atomic_write_text(summary, summary.read_text() + section)
        print(section)
        print(f"report -> {summary}")
    return 0


def run_seed(
    plan: Any,
    pool: dict[str, list[int]],
    images: dict[str, Volume],
    truth: dict[str, Volume],
    rounds: list[int],
    seed: int,
    rows: list[dict[str, Any]],
    cfg: dict[str, Any],
    args: argparse.Namespace,
    csv_path: Path,
) -> list[dict[str, Any]]:
    """Every strategy's rounds for one seed (the start round shared), appending rows as they finish."""
    done = {(r["method"], int(r["seed"]), int(r["n_train_slices"])): r for r in rows}
    labeled = {s: evenly_start(pool, rounds[0]) for s in args.strategies}
    for i, n in enumerate(rounds):
        todo = [s for s in args.strategies if (s, seed, n) not in done]
        for s in args.strategies:
            if (s, seed, n) in done:  # resumed: this round's labeled slices and what it added are in its row
                row = done[(s, seed, n)]
                current = [(c, int(z)) for c, z in json.loads(row["labeled"])]
                added = [(c, int(z)) for c, z in json.loads(row["next"])]
                if i + 1 < len(rounds) and len(added) != rounds[i + 1] - n:  # the row ended an earlier --max
                    if s == "suggest":
                        raise SystemExit(
                            f"{csv_path}: suggest's {n}-slice round of seed {seed} chose no next slices (it was the "
                            f"last round of an earlier run) and its model was not kept: remove its rows to rerun it"
                        )
                    step = rounds[i + 1] - n
                    added = (
                        evenly_next(pool, current, step) if s == "evenly" else random_next(pool, current, step, seed, i)
                    )
                labeled[s] = sorted(set(current) | set(added))
        groups: dict[tuple[Pair, ...], list[str]] = {}  # strategies with the same labeled slices share a model
        for s in todo:
            groups.setdefault(tuple(labeled[s]), []).append(s)
        for key, group in groups.items():
            current = list(key)
            if len(current) != n:
                raise RuntimeError(f"seed {seed}, {'/'.join(group)}: {len(current)} labeled slices for the {n} round")
            model = None
            trained = _trained_round(rows, seed, n, current)
            if trained is not None and "suggest" not in group:  # another strategy trained these slices already
                scored, checks = trained
                print(f"seed {seed}, {n} labeled slices, {'/'.join(group)}: same slices as a trained round", flush=True)
            else:
                run_dir = args.out / "runs" / f"seed{seed}" / ("start" if not i else "+".join(group)) / f"n{n}"
                print(f"seed {seed}, {n} labeled slices, {'/'.join(group)}: training", flush=True)
                model, scored, _ = train_and_score(plan, current, seed, run_dir, cfg, args)
                free = {c: [z for z in zs if (c, z) not in set(current)] for c, zs in pool.items()}
                checks = measure_check(
                    model, images, truth, free, seed, args.check_measures, device=args.device, precision=args.precision
                )
            for s in group:
                tick, distance = time.perf_counter(), math.nan
                nxt: list[Pair] = []
                if i + 1 < len(rounds):
                    step = rounds[i + 1] - n
                    if s == "suggest":
                        nxt, distance = suggest_next(model, plan.train_cases, images, pool, current, step, args, seed)
                    elif s == "evenly":
                        nxt = evenly_next(pool, current, step)
                    else:
                        nxt = random_next(pool, current, step, seed, i)
                select_seconds = time.perf_counter() - tick
                for r in scored:
                    rows.append(
                        {
                            "method": s,
                            "method_label": LABELS[s],
                            "budget": str(n),
                            "n_train_slices": n,
                            "seed": seed,
                            **r,
                            "labeled": json.dumps(current),
                            "next": json.dumps(nxt),
                            "distance_mm": distance,
                            "select_seconds": round(select_seconds, 1),
                            **checks,
                        }
                    )
                labeled[s] = sorted(set(current) | set(nxt))
                done[(s, seed, n)] = rows[-1]
            write_results_csv(rows, csv_path)
            print(
                "  scored: "
                + ", ".join(f"{r['protocol']} {r['present_DSC']:.3f}" for r in scored)
                + "; rho "
                + ", ".join(f"{k[4:]} {v:.2f}" for k, v in checks.items()),
                flush=True,
            )
            if model is not None and not args.keep_models:
                shutil.rmtree(run_dir / "model", ignore_errors=True)
                (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    return rows


#: A row's fields that belong to the strategy, not to the trained model.
_STRATEGY_FIELDS = ("method", "method_label", "labeled", "next", "distance_mm", "select_seconds")


def _trained_round(
    rows: list[dict[str, Any]], seed: int, n: int, labeled: list[Pair]
) -> tuple[list[dict[str, Any]], dict[str, float]] | None:
    """The scored rows and rho checks of a model already trained on exactly ``labeled`` for this seed (by any
    strategy, e.g. evenly and suggest at the same round, or the start round of a strategy run later), else None."""
    want = sorted(map(tuple, labeled))
    same = [
        r
        for r in rows
        if int(r["seed"]) == seed
        and int(r["n_train_slices"]) == n
        and sorted(map(tuple, json.loads(r["labeled"]))) == want
    ]
    if not same:
        return None
    same = [r for r in same if r["method"] == same[0]["method"]]  # one strategy's rows: one per scored case
    checks = {k: number(v) for k, v in same[0].items() if k.startswith("rho_")}
    scored = [{k: v for k, v in r.items() if k not in _STRATEGY_FIELDS and not k.startswith("rho_")} for r in same]
    return scored, checks


if __name__ == "__main__":
    sys.exit(main())
