"""Which uncertainty measure finds the slices a trained model gets wrong? Rank correlations on saved models.

``suggest`` ranks slices by an uncertainty measure (:mod:`smp_diffusion_encoder.labeling.uncertainty`); this
checks each measure against the truth on models already trained, without running the labeling loop. For each
run folder (``model/`` and ``split.json``: ``smp-diffusion finetune``, ``benchmarks.fewshot`` or
``benchmarks.labeling_loop --keep-models`` runs on a labeled case of ROOT), every measure is computed on the
case's slices the run was not trained on and compared (Spearman) with each slice's real error:

* ``dsc``: 1 - slice DSC over the organs in the truth or the prediction (every organ on the slice weighs the
  same: what the benchmarks' mean DSC rewards and what ``dice`` estimates);
* ``area``: the wrongly labeled area in cm² (what ``error``, ``entropy`` and ``tta`` estimate).

Two sets of slices per run: ``pool``, the train-side z blocks of :func:`smp_diffusion_encoder.study.protocol.
holdout` not trained on (what the labeling loop chooses among; the same split settings as the loop), and
``organs``, every slice not trained on whose truth holds an organ (the truth picks this set; no measure sees it).

Writes ``OUT/results.csv`` (one row per run and set) and ``OUT/summary.md`` (machine, date, command, the table,
the mean per measure).

    python -m benchmarks.measure_check ../shared/data/realct runs/loop/runs/seed0/start/n4 ... \\
        --out benchmarks/results/measure_check
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import smp_diffusion_encoder  # noqa: F401  (registers the encoders)
from benchmarks._machine import describe_machine, today
from benchmarks.labeling_loop import measure_check
from smp_diffusion_encoder._io import atomic_write_text
from smp_diffusion_encoder.data.preprocessing import SliceGeometry
from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.inference import load_model
from smp_diffusion_encoder.labeling.uncertainty import MEASURES
from smp_diffusion_encoder.study.config import StudyConfig
from smp_diffusion_encoder.study.protocol import holdout

SETS = ("pool", "organs")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="FLARE-layout root with the labeled case(s) the runs trained on")
    p.add_argument("runs", type=Path, nargs="+", help="run folders: model/ and split.json")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--measures", nargs="+", default=list(MEASURES), choices=MEASURES)
    p.add_argument("--block", type=int, default=StudyConfig.block)
    p.add_argument("--gap", type=int, default=StudyConfig.gap)
    p.add_argument("--holdout-seed", type=int, default=StudyConfig.holdout_seed)
    p.add_argument("--seed", type=int, default=0, help="seed of the tta views")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto")
    args = p.parse_args(argv)
    tick = time.perf_counter()
    for run in args.runs:
        for need in (run / "model", run / "split.json"):
            if not need.exists():
                p.error(f"{run}: not a run folder ({need.name} is missing)")
    plan = holdout(args.root, StudyConfig(block=args.block, gap=args.gap, holdout_seed=args.holdout_seed))
    images = {c.case_id: read_volume(c.image) for c in plan.train_cases}
    truth = {c.case_id: read_volume(c.label, kind="label") for c in plan.train_cases}
    rows = []
    for run in args.runs:
        model = load_model(run / "model")
        trained: dict[str, set[int]] = {}
        for case_id, z in json.loads((run / "split.json").read_text())["train"]:
            trained.setdefault(case_id, set()).add(int(z))
        unknown = set(trained) - set(images)
        if unknown:
            p.error(f"{run / 'split.json'}: trained on {sorted(unknown)}, not labeled cases of {args.root}")
        sets = {
            "pool": {c: [z for z in zs if z not in trained.get(c, set())] for c, zs in plan.pool.items()},
            "organs": {
                c: [
                    z
                    for z in range(images[c].array.shape[0])
                    if z not in trained.get(c, set())
                    and SliceGeometry.of(images[c], model.preprocessing).label_slices(truth[c])[z].any()
                ]
                for c in images
            },
        }
        for name in SETS:
            free = {c: zs for c, zs in sets[name].items() if zs}
            checks = measure_check(
                model, images, truth, free, args.seed, args.measures, device=args.device, precision=args.precision
            )
            n = sum(map(len, free.values()))
            rows.append(
                {"run": str(run), "set": name, "slices": n, "trained": sum(map(len, trained.values())), **checks}
            )
            print(
                f"{run} [{name}, {n} slices]: " + ", ".join(f"{k[4:]} {v:+.2f}" for k, v in checks.items()),
                flush=True,
            )
    write(rows, args, time.perf_counter() - tick, argv)
    return 0


def write(rows: list[dict[str, Any]], args: argparse.Namespace, seconds: float, argv: list[str] | None) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    fields = ["run", "set", "slices", "trained"] + [f"rho_{k}{m}" for k in ("", "area_") for m in args.measures]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows)
    atomic_write_text(args.out / "results.csv", buffer.getvalue())
    command = " ".join(["python -m benchmarks.measure_check", *(argv if argv is not None else sys.argv[1:])])
    head = ["run", "set", "slices"] + [f"`{m}` vs {k}" for k in ("dsc", "area") for m in args.measures]
    lines = [
        "# Which uncertainty measure finds the slices a model gets wrong?",
        "",
        f"- Date: {today()}. Machine: {describe_machine(args.device)}. Took {seconds / 60:.1f} min.",
        f"- Command: `{command}`",
        "- Spearman correlation over each run's slices not trained on, between each measure and the slice's real "
        "error: `dsc` = 1 - slice DSC (organs in the truth or prediction), `area` = wrongly labeled area (cm²). "
        "`pool`: the labeling loop's train-side blocks; `organs`: every untrained slice whose truth has an organ.",
        "",
        "| " + " | ".join(head) + " |",
        "| " + " | ".join("---" for _ in head) + " |",
    ]
    for r in rows:
        cells = [f"`{'/'.join(Path(r['run']).parts[-3:])}`", r["set"], str(r["slices"])]
        cells += [f"{r.get(f'rho_{k}{m}', float('nan')):+.2f}" for k in ("", "area_") for m in args.measures]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Mean over the runs:",
        "",
        "| set | " + " | ".join(head[3:]) + " |",
        "| --- |" + " --- |" * len(head[3:]),
    ]
    for name in SETS:
        mine = [r for r in rows if r["set"] == name]
        cells = []
        for k in ("", "area_"):
            for m in args.measures:
                v = np.array([r.get(f"rho_{k}{m}", np.nan) for r in mine], float)
                v = v[np.isfinite(v)]
                cells.append(f"{v.mean():+.2f} +- {v.std():.2f}" if v.size else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    atomic_write_text(args.out / "summary.md", "\n".join(lines) + "\n")
    print(f"report -> {args.out / 'summary.md'}")


if __name__ == "__main__":
    sys.exit(main())
