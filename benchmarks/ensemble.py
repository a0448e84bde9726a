"""Several decoders on the same labeled slices, their probabilities averaged: does the ensemble beat one decoder?

Deep ensembles (Lakshminarayanan et al., NeurIPS 2017) are the most robust of the common uncertainty methods
under dataset shift (Ovadia et al., NeurIPS 2019), and nnU-Net predicts with the average of its five
cross-validation models (Isensee et al., Nature Methods 2021). Here the shift is the one users meet: a few
slices of one non-contrast scan, other patients' contrast-enhanced scans. For each seed, ``finetune`` trains
``--members`` decoders with the default recipe on **the same** labeled slices (``FinetuneConfig.ensemble``:
member 0 draws the split; the members differ in initialisation, augmented views and batch order, seeds
``seed + 1000 k``), and every member's model folder and the ensemble's
(:class:`~smp_diffusion_encoder.heads.ModelEnsemble`: the mean of the members' probabilities) segment each scan
as ``predict`` does, post-processing included. Scored like :func:`smp_diffusion_encoder.study.protocol.score`:
held-out z blocks of the labeled scan (``within-volume``) **choose**; ``--test`` scans only report. Member 0 is
the run ``benchmarks.fewshot`` makes for the same seed.

Writes ``OUT/results.csv`` (per seed and scan: each member alone, and the ensemble; per-organ DSC) and
``OUT/summary.md`` (machine, date, command; mean +- std over seeds of one member vs the ensemble; per-seed
gains). A finished seed is skipped when the command is run again.

    python -m benchmarks.ensemble ../shared/data/realct --test ../shared/data/realct_extra/crosspatient \\
        --seeds 0 1 2 --members 3 --out benchmarks/results/ensemble
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import smp_diffusion_encoder  # noqa: F401  (registers the encoders)
from benchmarks import _one_scan
from benchmarks._machine import describe_machine, today
from smp_diffusion_encoder._io import atomic_write_text
from smp_diffusion_encoder.data.remap import FLARE_ORGANS
from smp_diffusion_encoder.data.volume import check_pair, read_volume
from smp_diffusion_encoder.finetune import FinetuneConfig, finetune
from smp_diffusion_encoder.inference import load_model, predict_volume
from smp_diffusion_encoder.study.protocol import WITHIN_VOLUME
from smp_diffusion_encoder.study.results import nan_mean
from smp_diffusion_encoder.study.scoring import organs_present, slice_metrics

FIELDS = ("variant", "seed", "members", "protocol", "case", "present_DSC", "train_seconds", *FLARE_ORGANS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _one_scan.add_arguments(p)
    p.add_argument("--members", type=int, default=3, help="decoders per ensemble (>= 2)")
    args = p.parse_args(argv)
    if args.members < 2:
        p.error(f"--members must be >= 2 (an ensemble), got {args.members}")
    tick = time.perf_counter()
    one = _one_scan.prepare(p, args)
    volumes = {}
    for _, scan, _ in one.scans:
        image, label = read_volume(scan.image), read_volume(scan.label, kind="label")  # type: ignore[arg-type]
        check_pair(image, label)
        volumes[scan.case_id] = (image, label)
    out, rows, done, precision, csv_path = args.out, one.rows, one.done, one.precision, args.out / "results.csv"
    for seed in args.seeds:
        if seed in done:
            print(f"seed {seed}: in {csv_path}, skipped")
            continue
        run = out / "runs" / f"seed{seed}"
        if run.exists():  # an interrupted seed starts again
            shutil.rmtree(run)
        config = FinetuneConfig(
            method="unet",
            encoder=args.encoder,
            encoder_weights=one.weights,
            budget=args.budget,
            seed=seed,
            steps=args.steps,
            image_size=args.image_size,
            augment_views=args.views,
            precision=args.precision,
            ensemble=args.members,
        )
        start = time.perf_counter()
        result = finetune(
            [one.case], config, out_dir=run, pool=one.plan.pool, progress=False, cache_dir=out / "feature_cache"
        )
        seconds = time.perf_counter() - start
        models = [(f"member {k}", 1, run / "members" / f"member{k}" / "model") for k in range(args.members)]
        models.append(("ensemble", args.members, result.model_dir))
        new: list[dict[str, Any]] = []
        for variant, members, model_dir in models:
            model = load_model(model_dir)
            for protocol, scan, zs in one.scans:
                image, label = volumes[scan.case_id]
                pred = predict_volume(model, image, precision=precision).labels
                new.append(_row(variant, seed, members, protocol, scan.case_id, label, pred, zs, seconds))
        shutil.rmtree(run / "members")
        shutil.rmtree(result.model_dir)
        rows += new
        print(
            f"seed {seed}: "
            + ", ".join(f"{r['variant']} {r['protocol']} {r['present_DSC']}" for r in new if r["variant"] == "ensemble")
        )
        _one_scan.write_rows(csv_path, FIELDS, rows)
    argv_text = " ".join(argv if argv is not None else sys.argv[1:])
    summary = summarize(rows, argv_text, precision, time.perf_counter() - tick)
    atomic_write_text(out / "summary.md", summary)
    print(summary)
    return 0


def _row(
    variant: str,
    seed: int,
    members: int,
    protocol: str,
    case: str,
    label: Any,
    pred: np.ndarray,
    zs: Sequence[int],
    seconds: float,
) -> dict[str, Any]:
    index = np.arange(label.array.shape[0]) if not len(zs) else np.asarray(zs, dtype=np.int64)
    metrics = slice_metrics(label, pred.astype(label.array.dtype), index)
    present = organs_present(label.array[index])
    return {
        "variant": variant,
        "seed": seed,
        "members": members,
        "protocol": protocol,
        "case": case,
        "present_DSC": round(nan_mean(metrics[f"{o}_DSC"] for o in present), 4),
        "train_seconds": round(seconds, 1),
        **{o: round(metrics[f"{o}_DSC"], 4) if o in present else "" for o in FLARE_ORGANS},
    }


def summarize(rows: Sequence[Mapping[str, Any]], argv: str, precision: str, seconds: float) -> str:
    """Markdown: per scan, one member (mean over members) vs the ensemble, mean +- std over seeds, and per organ."""
    lines = [
        "# An ensemble of decoders on the same labeled slices vs one decoder",
        "",
        f"- date: {today()}; machine: {describe_machine()}; precision {precision}",
        f"- this invocation's wall time {seconds:.0f} s (seeds already in results.csv are read, not rerun)",
        f"- command: `python -m benchmarks.ensemble {argv}`",
        "- within-volume (held-out z blocks) chooses; cross-patient only reports",
        "",
        "| protocol | scan | seeds | one decoder (mean of members) | ensemble | gain per seed | training per seed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    scans = sorted({(r["protocol"], r["case"]) for r in rows}, key=lambda k: (k[0] != WITHIN_VOLUME, k))
    per_organ = []
    for protocol, case in scans:
        sel = [r for r in rows if (r["protocol"], r["case"]) == (protocol, case)]
        seeds = sorted({int(r["seed"]) for r in sel})
        single = [
            np.mean([float(r["present_DSC"]) for r in sel if int(r["seed"]) == s and r["variant"] != "ensemble"])
            for s in seeds
        ]
        ens = [
            next(float(r["present_DSC"]) for r in sel if int(r["seed"]) == s and r["variant"] == "ensemble")
            for s in seeds
        ]
        train = [
            next(float(r["train_seconds"]) for r in sel if int(r["seed"]) == s and r["variant"] == "ensemble")
            for s in seeds
        ]
        lines.append(
            f"| {protocol} | {case} | {len(seeds)} | {np.mean(single):.3f} ± {np.std(single):.3f} | "
            f"{np.mean(ens):.3f} ± {np.std(ens):.3f} | {' '.join(f'{e - s:+.3f}' for e, s in zip(ens, single))} | "
            f"{np.median(train):.0f} s |"
        )
        organs = [o for o in FLARE_ORGANS if any(r[o] not in ("", None) for r in sel)]
        for variant, pick in (
            ("one decoder", lambda r: r["variant"] != "ensemble"),
            ("ensemble", lambda r: r["variant"] == "ensemble"),
        ):
            vals = [np.mean([float(r[o]) for r in sel if pick(r) and r[o] not in ("", None)]) for o in organs]
            per_organ.append((protocol, variant, organs, vals))
    lines += ["", "Per organ (mean DSC over seeds, and over members for one decoder):", ""]
    for protocol, variant, organs, vals in per_organ:
        lines.append(f"- {protocol}, {variant}: " + ", ".join(f"{o} {v:.2f}" for o, v in zip(organs, vals)))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
