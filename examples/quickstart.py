"""Quickstart: few-shot organ segmentation of another CT scan, offline, in a few minutes on a CPU.

1. fine-tune an smp Unet decoder on the frozen ``ddpm-ct`` encoder (its shipped default CT weights) with 4
   labeled slices of one real CT scan (shipped with the package; labels from a public model, see
   ``smp_diffusion_encoder/demo_data/README.md``), on the schedule rule;
2. segment another scan's DICOM series and write the label map with the series' geometry (NIfTI);
3. score it against that scan's label map with the FLARE 2022 metrics (DSC and NSD per organ).

    python examples/quickstart.py --out quickstart_output
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from smp_diffusion_encoder.data.flare import find_labeled_cases
from smp_diffusion_encoder.data.remap import FLARE_ORGANS
from smp_diffusion_encoder.evaluation import MEAN_FLARE, MEAN_PRESENT, evaluate_case, summarize, write_metrics_csv
from smp_diffusion_encoder.finetune import FinetuneConfig, finetune
from smp_diffusion_encoder.inference import load_model, predict_files
from smp_diffusion_encoder.study.demo import DEMO_DATA


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("quickstart_output"))
    p.add_argument("--encoder", default="ddpm-ct")
    p.add_argument("--budget", default="4", help="labeled slices (e.g. 4, 16, all)")
    p.add_argument("--steps", type=int, default=None, help="default: the schedule rule")
    p.add_argument("--image-size", type=int, default=None, help="default: the encoder's preprocessing")
    args = p.parse_args()
    start = time.perf_counter()

    (train,) = find_labeled_cases(DEMO_DATA / "train")  # one labeled scan (NIfTI)
    (other,) = find_labeled_cases(DEMO_DATA / "test")  # another scan: a DICOM series and its label map
    config = FinetuneConfig(
        method="unet", encoder=args.encoder, budget=args.budget, steps=args.steps, image_size=args.image_size
    )
    result = finetune([train], config, out_dir=args.out / "finetune")
    print(f"trained on {args.budget} labeled slices of {train.case_id}: {result.describe()}")

    report = predict_files([other.image], load_model(result.model_dir), args.out / "predictions")
    (prediction,) = report.written[next(iter(report.written))]  # <case>.nii.gz on the DICOM series' grid
    scores = evaluate_case(prediction, other.label)
    write_metrics_csv([scores], args.out / "metrics.csv")
    print(" ".join(f"{o}={scores.dsc(o):.2f}" for o in FLARE_ORGANS))  # absent from scan and prediction: 1.0
    means = summarize([scores])  # the two means `smp-diffusion evaluate` prints, under the same names
    print(
        f"on {other.case_id} (another scan): DSC {means[MEAN_PRESENT][0]:.3f} {MEAN_PRESENT.lower()}, "
        f"{means[MEAN_FLARE][0]:.3f} {MEAN_FLARE}; metrics in {args.out / 'metrics.csv'}; "
        f"{time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
