"""Quickstart: the whole path on built-in data, offline, in about a minute on a CPU.

1. write a small CT phantom dataset in the FLARE 2022 layout;
2. fine-tune ``smp.Unet(encoder_name="ddpm-ct")`` with a frozen encoder on 4 labeled slices of the first
   case (seeded z-spread selection, cached multi-timestep features, the library's one training loop);
3. segment the held-out case, write the label map with the input's exact geometry, and score it with
   the FLARE 2022 metrics (DSC and NSD per organ).

``finetune`` uses the encoder's shipped default CT weights (``encoder_weights="auto"``). They were pretrained
briefly on a CPU on a few real CT volumes, and the phantom looks unlike real CT: expect modest scores; this
shows the API and the data flow, not the method's accuracy.

    python examples/quickstart.py --out quickstart_output
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import smp_diffusion_encoder  # noqa: F401  (registers "ddpm-ct")
from smp_diffusion_encoder.data.flare import FlareDataset
from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.data.remap import FLARE_ORGANS
from smp_diffusion_encoder.data.volume import read_volume, write_label_map
from smp_diffusion_encoder.evaluation import evaluate_case, write_metrics_csv
from smp_diffusion_encoder.finetune import finetune
from smp_diffusion_encoder.inference import load_model, predict_volume


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("quickstart_output"))
    p.add_argument("--encoder", default="ddpm-ct")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--slices", default="4", help="label budget (e.g. 4, 10%%)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    start = time.perf_counter()

    root = write_phantom_dataset(args.out / "phantom", n_labeled=2, n_unlabeled=0, seed=args.seed, shape=(32, 160, 160))
    train_case, test_case = FlareDataset.discover(root).labeled
    model_dir = finetune(
        [train_case], method="unet", out_dir=args.out / "finetune", encoder=args.encoder, budget=args.slices,
        seed=args.seed, steps=args.steps, image_size=args.image_size, lr=3e-3,
    )
    print(f"trained on {args.slices} labeled slices of {train_case.case_id}; model in {model_dir}")

    test_image = read_volume(test_case.image)
    pred = predict_volume(load_model(model_dir), test_image, progress=True)
    pred_path = write_label_map(pred.labels, test_image, args.out / "predictions" / f"{test_case.case_id}.nii.gz")

    r = evaluate_case(pred_path, test_case.label)
    write_metrics_csv([r], args.out / "metrics.csv")
    dsc = np.array([r.dsc(o) for o in FLARE_ORGANS], dtype=float)
    print(" ".join(f"{o}={d:.2f}" for o, d in zip(FLARE_ORGANS, dsc)))
    print(f"mean DSC {np.nanmean(dsc):.3f} on {test_case.case_id} "
          f"metrics in {args.out / 'metrics.csv'}; finished in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
