"""Quickstart: the whole path on built-in data, offline, in a couple of minutes on a CPU.

1. write a small CT phantom dataset in the FLARE 2022 layout;
2. read the labeled cases (NIfTI -> canonical (Z, Y, X) HU), window and resize the slices;
3. pick 4 labeled slices of the first case with the seeded z-spread policy;
4. build ``smp.Unet(encoder_name="ddpm-ct")``, freeze the encoder, cache its multi-timestep features
   for the 4 slices once and train the decoder on them;
5. segment the held-out case, write the label map with the input's exact geometry, and score it with
   the FLARE 2022 metrics (DSC and NSD per organ).

The ``ddpm-ct`` weights are random here (``encoder_weights=None``) until the pretrained default weights
ship, so expect low scores: this shows the API and the data flow, not the method's accuracy.

    python examples/quickstart.py --out quickstart_output
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from tqdm import tqdm

import smp_diffusion_encoder  # noqa: F401  (registers "ddpm-ct")
from smp_diffusion_encoder.data.flare import FlareDataset
from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.data.preprocess import (
    PreprocessConfig,
    labels_to_model_slices,
    model_slices_to_volume,
    volume_to_model_slices,
)
from smp_diffusion_encoder.data.remap import FLARE_NUM_CLASSES, FLARE_ORGANS
from smp_diffusion_encoder.data.splits import eligible_slices, select_slices
from smp_diffusion_encoder.data.volume import read_volume, write_label_map
from smp_diffusion_encoder.evaluation import evaluate_case, write_metrics_csv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("quickstart_output"))
    p.add_argument("--encoder", default="ddpm-ct")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--slices", default="4", help="label budget (e.g. 4, 10%%)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    root = write_phantom_dataset(args.out / "phantom", n_labeled=2, n_unlabeled=0, seed=args.seed, shape=(32, 160, 160))
    data = FlareDataset.discover(root)
    train_case, test_case = data.labeled[0], data.labeled[1]
    cfg = PreprocessConfig(image_size=args.image_size)

    image, labels = read_volume(train_case.image), read_volume(train_case.label, kind="label")
    x_all, y_all = volume_to_model_slices(image, cfg), labels_to_model_slices(labels, cfg)
    split = select_slices({train_case.case_id: eligible_slices(y_all)}, args.slices, seed=args.seed)
    zs = [z for _, z in split.train]
    print(f"training on {len(zs)} labeled slices of {train_case.case_id}: z = {zs}")
    x = torch.from_numpy(x_all[zs]).unsqueeze(1)
    y = torch.from_numpy(y_all[zs]).long()

    model = smp.Unet(encoder_name=args.encoder, encoder_weights=None, in_channels=1, classes=FLARE_NUM_CLASSES)
    model.encoder.requires_grad_(False).eval()
    with torch.inference_mode():
        features = [f.clone() for f in model.encoder(x)]  # computed once, reused every step
    params = list(model.decoder.parameters()) + list(model.segmentation_head.parameters())
    opt = torch.optim.AdamW(params, lr=3e-3)
    for _ in (bar := tqdm(range(args.steps), desc="decoder", unit="step")):
        logits = model.segmentation_head(model.decoder(features))
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")

    test_image = read_volume(test_case.image)
    slices = torch.from_numpy(volume_to_model_slices(test_image, cfg)).unsqueeze(1)
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(b).argmax(1) for b in tqdm(slices.split(8), desc="predict", unit="batch")])
    pred_volume = model_slices_to_volume(pred.numpy().astype(np.uint8), test_image, kind="label")
    pred_path = write_label_map(pred_volume, test_image, args.out / "predictions" / f"{test_case.case_id}.nii.gz")

    r = evaluate_case(pred_path, test_case.label)
    write_metrics_csv([r], args.out / "metrics.csv")
    dsc = np.array([r.dsc(o) for o in FLARE_ORGANS], dtype=float)
    print(" ".join(f"{o}={d:.2f}" for o, d in zip(FLARE_ORGANS, dsc)))
    print(f"mean DSC {np.nanmean(dsc):.3f} on {test_case.case_id} (random encoder weights); "
          f"metrics in {args.out / 'metrics.csv'}; finished in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
