"""Feature context from neighbouring slices inside the decoder: does it help on held-out slices? (issue 19, item 2)

The default recipe looks at neighbouring slices only after the model: each slice's class probabilities are
averaged with those of the slices 6 mm above and below (``postprocessing.json``, ``z_context_mm``). This
benchmark asks whether the decoder does better when it *sees* them, in the 2.5D way (the frozen 2D encoder runs
on each of three slices, the decoder gets all three slices' features):

* ``2d``: the default recipe's smp Unet decoder on the slice's own frozen ``ddpm-ct`` features;
* ``z<mm>``: the same decoder after a per-level 1x1 convolution of the features of the slices ``mm`` above, at
  and below the slice (nearest slice; the edges repeat the last slice), initialised to pass the centre slice's
  features through unchanged, so training starts from the ``2d`` model and learns what the neighbours add.

Both arms train in the same process on the same few-shot split, the same augmented views (the three slices of a
view augmented together: same spatial transform, contrast phase and organ levels,
:class:`~smp_diffusion_encoder.data.augment.Augmentation` with ``organs``), the same schedule, learning rate and
seed as ``finetune``'s default ``unet`` recipe; ``2d`` uses the centre slice of those views only. Both are scored
through the product's resampling
(:meth:`~smp_diffusion_encoder.data.preprocessing.SliceGeometry.probabilities_to_volume`) and FLARE 2022 metrics
on the label file's grid, as :func:`smp_diffusion_encoder.study.protocol.score` scores: without and with the
6 mm probability averaging (``+avg``). Held-out z blocks of the labeled scan (``within-volume``,
:func:`~smp_diffusion_encoder.study.protocol.holdout`) **choose**; ``--test`` scans only report.

Writes ``OUT/results.csv`` (one row per arm, variant, seed and scan; per-organ DSC) and ``OUT/summary.md``
(machine, date, command, mean +- std over seeds, per-seed differences to ``2d``). A finished seed is skipped
when the command is run again (resumable).

    python -m benchmarks.z_features ../shared/data/realct --test ../shared/data/realct_extra/crosspatient \\
        --seeds 0 1 2 --out benchmarks/results/z_features
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch import nn

import smp_diffusion_encoder  # noqa: F401  (registers the encoders)
from benchmarks import _one_scan
from benchmarks._machine import describe_machine, today
from smp_diffusion_encoder._device import autocast
from smp_diffusion_encoder._io import atomic_write_text
from smp_diffusion_encoder.data.augment import build_augmentation
from smp_diffusion_encoder.data.flare import Case
from smp_diffusion_encoder.data.postprocess import smooth_along_z
from smp_diffusion_encoder.data.preprocessing import SliceGeometry
from smp_diffusion_encoder.data.remap import FLARE_NUM_CLASSES, FLARE_ORGANS
from smp_diffusion_encoder.data.volume import check_pair, read_volume
from smp_diffusion_encoder.finetune import FinetuneConfig
from smp_diffusion_encoder.finetune.batches import slice_batches
from smp_diffusion_encoder.finetune.data import LabeledSlices, build_split, load_cases, views_per_slice
from smp_diffusion_encoder.finetune.schedule import plan_schedule
from smp_diffusion_encoder.finetune.steps import DecoderStep, decoder_param_groups
from smp_diffusion_encoder.heads import FeatureCache
from smp_diffusion_encoder.registry.weights import load_encoder, use_pretrained
from smp_diffusion_encoder.study.protocol import WITHIN_VOLUME
from smp_diffusion_encoder.study.results import nan_mean
from smp_diffusion_encoder.study.scoring import organs_present, slice_metrics
from smp_diffusion_encoder.training import TrainConfig, Trainer

FIELDS = (
    "arm",
    "variant",
    "seed",
    "protocol",
    "case",
    "present_DSC",
    "context_mm",
    "neighbour_weight",
    "train_seconds",
    *FLARE_ORGANS,
)


class ContextDecoder(nn.Module):
    """An smp decoder fed the features of ``n`` slices: level ``i`` ``(B, n * C_i, h, w)`` (slices in z order)
    -> 1x1 convolution -> ``(B, C_i, h, w)`` -> ``decoder``. Initialised to pass the centre slice through."""

    def __init__(self, decoder: nn.Module, channels: Sequence[int], n: int = 3) -> None:
        super().__init__()
        self.decoder, self.n = decoder, n
        self.fuse = nn.ModuleList()
        for c in channels:
            conv = nn.Conv2d(n * c, c, 1, bias=False)
            with torch.no_grad():
                conv.weight.zero_()
                conv.weight[:, (n // 2) * c : (n // 2 + 1) * c, 0, 0] = torch.eye(c)
            self.fuse.append(conv)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.decoder([f(x) for f, x in zip(self.fuse, features)])

    def neighbour_weight(self) -> float:
        """How much the trained fusion uses the neighbours: mean over levels of the Frobenius norm of the
        neighbours' weights over the centre slice's (0 at initialisation)."""
        ratios = []
        for conv in self.fuse:
            w = conv.weight.detach()[:, :, 0, 0].float()
            c = w.shape[0]
            centre = w[:, (self.n // 2) * c : (self.n // 2 + 1) * c]
            rest = torch.cat([w[:, : (self.n // 2) * c], w[:, (self.n // 2 + 1) * c :]], dim=1)
            ratios.append(float(rest.norm() / centre.norm()))
        return float(np.mean(ratios))


def neighbours(z: int, offset: int, depth: int) -> list[int]:
    """Slice indices ``[z - offset, z, z + offset]``, clipped to ``[0, depth - 1]`` (the edge slice repeats)."""
    return [min(max(z + d, 0), depth - 1) for d in (-offset, 0, offset)]


def stack_views(
    volume: tuple[np.ndarray, np.ndarray],
    case_id: str,
    zs: Sequence[int],
    offset: int,
    views: int,
    seed: int,
    hu_window: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(V, 3, S, S)`` slice stacks (below, at, above), ``(V, S, S)`` centre labels and view ids, ordered as
    :func:`~smp_diffusion_encoder.finetune.data.augmented_views` orders them (the slices, then copy 1 of each...).
    Copy ``k`` of a stack is a function of ``(seed, slice id, k)`` as there."""
    images, labels = volume
    aug = build_augmentation("default", hu_window=hu_window)
    out_x, out_y, ids = [], [], []
    for k in range(views):
        for z in zs:
            idx = neighbours(z, offset, images.shape[0])
            x, y = images[idx].astype(np.float32), labels[idx].astype(np.uint8)
            sid = f"{case_id}:{z}"
            if k:
                organs = np.unique(y).tolist()
                state = int(np.random.SeedSequence([seed, *sid.encode(), k]).generate_state(1)[0])
                pairs = []
                for i in range(3):
                    aug.reseed(state)
                    pairs.append(aug(x[i], y[i], organs=organs))
                x = np.stack([p[0] for p in pairs])
                y = np.stack([p[1] for p in pairs])
                sid = f"{sid}#aug{k}"
            out_x.append(x)
            out_y.append(y[1])
            ids.append(sid)
    return torch.from_numpy(np.stack(out_x)), torch.from_numpy(np.stack(out_y).astype(np.int64)), ids


def encode_stacks(cache: FeatureCache, ids: Sequence[str], stacks: torch.Tensor) -> list[list[torch.Tensor]]:
    """Frozen features of each of the three slices of every stack: ``[slice][level] (V, C, h, w)``."""
    return [cache.features([f"{i}@{s}" for i in ids], stacks[:, s : s + 1].contiguous()) for s in range(3)]


def joined(per_slice: list[list[torch.Tensor]], arm: str) -> list[torch.Tensor]:
    """The decoder input of ``arm``: the centre slice's levels (``2d``) or the three slices' levels side by side."""
    if arm == "2d":
        return per_slice[1]
    return [torch.cat(levels, dim=1) for levels in zip(*per_slice)]


def train_arm(
    arm: str,
    encoder: nn.Module,
    config: FinetuneConfig,
    features: list[torch.Tensor],
    labels: torch.Tensor,
    steps: int,
    lr_factor: Any,
    out_dir: Path,
    precision: str,
) -> nn.Module:
    """One decoder trained as ``finetune`` trains the default ``unet`` head on cached features."""
    torch.manual_seed(config.seed)
    model = smp.create_model(
        "Unet", encoder_name=config.encoder, encoder_weights=None, in_channels=1, classes=FLARE_NUM_CLASSES
    )
    use_pretrained(model.encoder, encoder)
    model.encoder.requires_grad_(False)
    if arm != "2d":
        model.decoder = ContextDecoder(model.decoder, model.encoder.out_channels)
    model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(decoder_param_groups(model, config.resolved_lr, config.encoder_lr_scale))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    train = LabeledSlices(torch.empty(len(labels), 1, 1, 1), labels, tuple(str(i) for i in range(len(labels))))
    trainer = Trainer(
        model,
        optimizer,
        DecoderStep(None),
        TrainConfig(
            max_steps=steps,
            out_dir=str(out_dir),
            grad_clip=1.0,
            log_every=max(1, min(10, steps // 20)),
            ckpt_every=0,
            seed=config.seed,
            ema_decay=None,
            progress=False,
            title=f"{arm}, seed {config.seed}",
            precision=precision,
        ),
        scheduler=scheduler,
        device=torch.device("cpu"),
    )
    trainer.fit(
        slice_batches(
            train, features, config.resolved_batch_size, config.seed, 0, 1, needs_image=False, unfreeze_at=None
        )
    )
    return model.eval()


def volume_probabilities(
    model: nn.Module, arm: str, per_slice_features: list[torch.Tensor], offset: int, precision: str
) -> np.ndarray:
    """``(Z, K, S, S)`` class probabilities of a volume's model slices from their frozen features."""
    depth = per_slice_features[0].shape[0]
    out = []
    for start in range(0, depth, 8):
        zs = range(start, min(start + 8, depth))
        rows = [[z] if arm == "2d" else neighbours(z, offset, depth) for z in zs]
        feats = [
            torch.cat([f[[r[s] for r in rows]].float() for s in range(len(rows[0]))], dim=1) for f in per_slice_features
        ]
        feats = [f.contiguous(memory_format=torch.channels_last) for f in feats]
        with torch.no_grad(), autocast(torch.device("cpu"), precision):
            out.append(model.segmentation_head(model.decoder(feats)).float().softmax(1).numpy())
    return np.concatenate(out)


def score_volume(
    case: Case, geometry: SliceGeometry, probs: np.ndarray, zs: Sequence[int]
) -> tuple[dict[str, float], list[str]]:
    """FLARE metrics of model-grid probabilities on ``case``'s label file (slices ``zs``; empty: all), scored as
    :func:`smp_diffusion_encoder.study.protocol.score` scores: maps zeroed outside the slices, the file's spacing."""
    label = read_volume(case.label, kind="label")  # type: ignore[arg-type]
    pred = np.zeros_like(label.array)
    for start in range(0, probs.shape[0], 8):
        pred[start : start + 8] = geometry.probabilities_to_volume(probs[start : start + 8]).argmax(1)
    index = np.arange(label.array.shape[0]) if not len(zs) else np.asarray(zs, dtype=np.int64)
    metrics = slice_metrics(label, pred, index)
    return metrics, organs_present(label.array[index])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _one_scan.add_arguments(p)
    p.add_argument("--context-mm", type=float, default=6.0, help="distance of the neighbouring slices (mm)")
    args = p.parse_args(argv)
    tick = time.perf_counter()
    one = _one_scan.prepare(p, args)
    case, plan, scans, precision, weights = one.case, one.plan, one.scans, one.precision, one.weights
    encoder = load_encoder(args.encoder, weights, image_size=args.image_size)
    prep = encoder.pretrained_cfg.preprocessing
    volumes = load_cases([case], prep)
    out, rows, done, csv_path = args.out, one.rows, one.done, args.out / "results.csv"
    # every scan's frozen features once: [slice][level] for the whole model grid, and how far its neighbours are
    cache = FeatureCache(encoder.to(memory_format=torch.channels_last), None, precision=precision)
    grids = {}
    for _, scan, _ in scans:
        image = read_volume(scan.image)
        if scan.label is not None:
            check_pair(image, read_volume(scan.label, kind="label"))
        geometry = SliceGeometry.of(image, prep)
        slices = torch.from_numpy(geometry.image_slices(image, prep))[:, None]
        offset = max(1, round(args.context_mm / float(image.spacing[0])))
        feats = cache.features([f"{scan.case_id}:{z}" for z in range(len(slices))], slices)
        grids[scan.case_id] = (geometry, feats, offset, float(image.spacing[0]))
    _, _, train_offset, train_dz = grids[case.case_id]
    for seed in args.seeds:
        if seed in done:
            print(f"seed {seed}: in {csv_path}, skipped")
            continue
        config = FinetuneConfig(
            method="unet", encoder=args.encoder, encoder_weights=weights, budget=args.budget, seed=seed
        )
        split = build_split(
            {case.case_id: volumes[case.case_id][1]}, args.budget, seed, val_fraction=0.0, pool=plan.pool
        )
        zs = [z for _, z in split.train]
        views = args.views or views_per_slice(len(zs))
        schedule = plan_schedule(
            "unet",
            n_slices=len(zs),
            image_size=prep.image_size,
            batch_size=config.resolved_batch_size,
            n_val=0,
            min_val_slices=config.min_val_slices,
            steps=args.steps,
            augmented=True,
        )
        stacks, labels, ids = stack_views(
            volumes[case.case_id], case.case_id, zs, train_offset, views, seed, prep.hu_window
        )
        views_cache = FeatureCache(cache.encoder, None, encoder_key=cache.encoder_key, precision=precision)
        per_slice = encode_stacks(views_cache, ids, stacks)
        for arm in ("2d", f"z{args.context_mm:g}"):
            start = time.perf_counter()
            model = train_arm(
                arm,
                encoder,
                config,
                joined(per_slice, arm),
                labels,
                schedule.steps,
                schedule.lr_factor,
                out / "runs" / arm / f"seed{seed}",
                precision,
            )
            seconds = time.perf_counter() - start
            for protocol, scan, scored in scans:
                geometry, feats, offset, dz = grids[scan.case_id]
                probs = volume_probabilities(model, arm, feats, offset, precision)
                for variant, p_var in (("", probs), ("+avg", smooth_along_z(probs, dz, config.z_context_mm))):
                    metrics, present = score_volume(scan, geometry, p_var, scored)
                    rows.append(
                        {
                            "arm": arm,
                            "variant": f"{arm}{variant}",
                            "seed": seed,
                            "protocol": protocol,
                            "case": scan.case_id,
                            "present_DSC": round(nan_mean(metrics[f"{o}_DSC"] for o in present), 4),
                            "context_mm": round(offset * dz, 2) if arm != "2d" else 0,
                            "neighbour_weight": round(model.decoder.neighbour_weight(), 4) if arm != "2d" else "",
                            "train_seconds": round(seconds, 1),
                            **{o: round(metrics[f"{o}_DSC"], 4) if o in present else "" for o in FLARE_ORGANS},
                        }
                    )
            print(
                f"seed {seed} {arm}: {seconds:.0f} s; "
                + ", ".join(
                    f"{r['variant']} {r['protocol']} {r['present_DSC']}"
                    for r in rows
                    if r["seed"] == seed and r["arm"] == arm
                )
            )
        _one_scan.write_rows(csv_path, FIELDS, rows)
    summary = summarize(
        precision, rows, argv if argv is not None else sys.argv[1:], time.perf_counter() - tick, train_dz, train_offset
    )
    atomic_write_text(out / "summary.md", summary)
    print(summary)
    return 0


def summarize(
    precision: str, rows: Sequence[Mapping[str, Any]], argv: Sequence[str], seconds: float, dz: float, offset: int
) -> str:
    """Markdown: mean +- std over seeds per variant and scan, per organ, and each seed's difference to ``2d``."""
    lines = [
        "# Feature context from neighbouring slices in the decoder",
        "",
        f"- date: {today()}; machine: {describe_machine()}; precision {precision}",
        f"- this invocation's wall time {seconds:.0f} s (seeds already in results.csv are read, not rerun)",
        "- decoder training time per run (median over seeds): "
        + ", ".join(
            f"{arm} {np.median([float(r['train_seconds']) for r in rows if r['arm'] == arm]):.0f} s"
            for arm in sorted({r["arm"] for r in rows})
        ),
        f"- command: `python -m benchmarks.z_features {' '.join(argv)}`",
        f"- neighbouring slices of the labeled scan: {offset} slice(s) of {dz:g} mm away ({offset * dz:g} mm)",
        "- within-volume (held-out z blocks) chooses; cross-patient only reports",
        "",
        "| variant | protocol | scan | seeds | mean DSC over present organs | per seed | minus 2d (same seed) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    keys = sorted({(r["protocol"], r["case"], r["variant"]) for r in rows}, key=lambda k: (k[0] != WITHIN_VOLUME, k))
    base = {(r["protocol"], r["case"], int(r["seed"]), r["variant"]): float(r["present_DSC"]) for r in rows}
    for protocol, scan, variant in keys:
        seeds = sorted(
            int(r["seed"]) for r in rows if (r["protocol"], r["case"], r["variant"]) == (protocol, scan, variant)
        )
        vals = [base[(protocol, scan, s, variant)] for s in seeds]
        ref = "2d+avg" if variant.endswith("+avg") else "2d"
        diffs = [base[(protocol, scan, s, variant)] - base[(protocol, scan, s, ref)] for s in seeds]
        lines.append(
            f"| {variant} | {protocol} | {scan} | {len(seeds)} | {np.mean(vals):.3f} +- {np.std(vals):.3f} | "
            f"{' '.join(f'{v:.3f}' for v in vals)} | {' '.join(f'{d:+.3f}' for d in diffs)} |"
        )
    weights = [float(r["neighbour_weight"]) for r in rows if r.get("neighbour_weight") not in ("", None)]
    if weights:
        lines += [
            "",
            f"How much the trained fusion uses the neighbours (norm of their 1x1 weights over the centre slice's, "
            f"mean over levels; 0 at the start): {np.mean(weights):.3f} (range {min(weights):.3f}-{max(weights):.3f})",
        ]
    lines += ["", "Per organ (mean DSC over seeds; organs present in the scored slices):", ""]
    organs = [o for o in FLARE_ORGANS if any(r[o] not in ("", None) for r in rows)]
    lines.append("| variant | protocol | " + " | ".join(organs) + " |")
    lines.append("| --- | --- | " + " | ".join("---" for _ in organs) + " |")
    for protocol, scan, variant in keys:
        sel = [r for r in rows if (r["protocol"], r["case"], r["variant"]) == (protocol, scan, variant)]
        cells = []
        for o in organs:
            vals = [float(r[o]) for r in sel if r[o] not in ("", None)]
            cells.append(f"{np.mean(vals):.2f}" if vals else "-")
        lines.append(f"| {variant} | {protocol} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
