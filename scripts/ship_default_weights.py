"""Turn a pretraining run into the package's default weights: ``smp_diffusion_encoder/weights/<variant>/``.

Steps (all from the run's own files, nothing typed in by hand):

1. export the EMA U-Net as encoder weights (:func:`~smp_diffusion_encoder.hub.export.export_encoder`);
2. store float tensors as float16 when that is needed to stay under ``--max-mb`` (they load into float32
   modules unchanged in meaning: ``load_state_dict`` casts on copy);
3. draw a DDIM sample grid from the same EMA U-Net (``samples.png``) and copy the loss curve (``loss.png``);
4. extend the model card with the data and its licences, the exact commands, steps, training hours (from the
   run's ``metrics.csv``), final loss, the loss curve, the samples and, if given, the compute curve (figure
   and table: what the weights score downstream at each pretraining milestone).

The card must not leak the training machine: a card that names an absolute path (``/work/...``, the run or
store folder) is refused.

    python scripts/ship_default_weights.py runs/main128 --variant ddpm-ct --milestone 4000 \\
        --data-file data.md --command "smp-diffusion prepare-slices ..." --command "smp-diffusion pretrain ..." \\
        --curve benchmarks/results/compute_curve/compute_curve.png \\
        --curve-table benchmarks/results/compute_curve/table.md
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from smp_diffusion_encoder._io import atomic_path, atomic_write_text  # noqa: E402
from smp_diffusion_encoder.errors import ConfigError  # noqa: E402
from smp_diffusion_encoder.hub.export import export_encoder  # noqa: E402
from smp_diffusion_encoder.hub.weights import CARD_NAME, WEIGHTS_NAME  # noqa: E402
from smp_diffusion_encoder.training.run_folder import hours_at, load_run, training_hours  # noqa: E402

#: An absolute path in a card (a token starting with "/" followed by a folder and another "/").
ABSOLUTE_PATH = re.compile(r"(?:^|[\s`('\"=:])(/[\w.-]+/[\w./-]*)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--variant", default="ddpm-ct")
    p.add_argument("--out", type=Path, default=None, help="default: smp_diffusion_encoder/weights/<variant>")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="pretraining data, one line")
    data.add_argument("--data-file", type=Path, help="pretraining data and licences, a markdown file")
    p.add_argument(
        "--command",
        action="append",
        required=True,
        help="an exact command of the pretraining (repeat in order: prepare-slices, pretrain, resumes)",
    )
    p.add_argument("--curve", type=Path, default=None, help="the compute-curve figure (PNG) to ship beside the card")
    p.add_argument("--curve-table", type=Path, default=None, help="the compute-curve table (markdown) for the card")
    p.add_argument("--license", default="apache-2.0")
    p.add_argument("--max-mb", type=float, default=30.0)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--notes", default="")
    p.add_argument("--milestone", type=int, default=None, help="ship the weights the run kept at this step")
    args = p.parse_args(argv)

    out = args.out or REPO / "smp_diffusion_encoder" / "weights" / args.variant
    info = load_run(args.run_dir, use_ema=True, milestone=args.milestone)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "weights"
        export_encoder(info, staged, variant=args.variant, license=args.license, command=args.command[-1])
        weights = staged / WEIGHTS_NAME
        dtype = "float32"
        if weights.stat().st_size > args.max_mb * 2**20:
            sd = load_file(str(weights))
            sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
            save_file(sd, str(weights), metadata={"format": "pt"})
            dtype = "float16"
        size_mb = weights.stat().st_size / 2**20
        if size_mb > args.max_mb:
            raise SystemExit(f"{weights}: {size_mb:.1f} MB even in float16, over --max-mb {args.max_mb}")
        _sample_grid(info, staged / "samples.png", args.samples, args.sample_steps)
        shutil.copyfile(args.run_dir / "loss.png", staged / "loss.png")
        if args.curve is not None:
            shutil.copyfile(args.curve, staged / "compute_curve.png")
        card = (staged / CARD_NAME).read_text() + _card_extra(args, info.step, dtype, size_mb)
        leaks = sorted(set(ABSOLUTE_PATH.findall(card)))
        if leaks:
            raise SystemExit(
                f"the model card names absolute paths of this machine: {', '.join(leaks)}; "
                "describe data and commands with relative paths"
            )
        atomic_write_text(staged / CARD_NAME, card)
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(staged.iterdir()):  # the weights last: a folder without them is not registered
            if f.name != WEIGHTS_NAME:
                with atomic_path(out / f.name) as dst:
                    shutil.copyfile(f, dst)
        with atomic_path(out / WEIGHTS_NAME) as dst:
            shutil.copyfile(weights, dst)
    print(f"default weights -> {out} ({size_mb:.1f} MB, {dtype}, step {info.step})")
    return 0


def _sample_grid(info, path: Path, n: int, steps: int) -> None:  # type: ignore[no-untyped-def]
    from smp_diffusion_encoder.generation.config import SampleConfig
    from smp_diffusion_encoder.generation.outputs import save_png_grid
    from smp_diffusion_encoder.generation.sampling import sample

    config = SampleConfig(num_samples=n, sampler="ddim", steps=steps, seed=0)
    samples = sample(info.build_unet(), info.schedule, config, progress=True)
    save_png_grid(samples, path, nrow=4)


def _card_extra(args: argparse.Namespace, step: int, dtype: str, size_mb: float) -> str:
    with open(args.run_dir / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("loss") and int(r["step"]) <= step]
    last = rows[-10:]  # the loss up to the shipped step, not where the run went on to
    final = sum(float(r["loss"]) for r in last) / max(1, len(last))
    try:
        hours_text = f"{hours_at(training_hours(args.run_dir), step):.1f} hours (summed from the run's `metrics.csv`)"
    except (ConfigError, KeyError, ValueError):  # a run that logged no throughput or batch size
        hours_text = "not recorded"
    data = args.data_file.read_text().strip() if args.data_file else f"- {args.data}"
    lines = [
        "",
        "## Default weights of this package",
        "",
        f'These are the offline default weights of `{args.variant}` (`encoder_weights="ct"`, alias '
        '`"imagenet"`), shipped inside the package.',
        "",
        "### Data",
        "",
        data,
        "",
        "### How they were trained",
        "",
        *(f"{i}. `{command}`" for i, command in enumerate(args.command, start=1)),
        "",
        f"- Optimizer steps: {step}; training time to reach them: {hours_text}; mean loss over the last "
        f"{len(last)} logged windows before it: {final:.4f}",
        f"- Stored as {dtype} ({size_mb:.1f} MB); exported from the EMA weights",
        *([f"- {args.notes}"] if args.notes else []),
        "",
        "Training loss (`loss.png`):",
        "",
        "![loss curve](loss.png)",
        "",
    ]
    if args.curve is not None or args.curve_table is not None:
        lines += ["### Downstream score by pretraining step (compute curve)", ""]
        if args.curve_table is not None:
            lines += [args.curve_table.read_text().strip(), ""]
        if args.curve is not None:
            lines += ["![compute curve](compute_curve.png)", ""]
    lines += [
        f"DDIM samples ({args.sample_steps} steps, seed 0) from the same EMA U-Net (`samples.png`):",
        "",
        "![samples](samples.png)",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
