"""``smp-diffusion select-features ROOT --out WEIGHTS_DIR``: choose timesteps and decoder blocks for your data.

Scores candidate diffusion timesteps and decoder blocks of a ddpm-ct encoder with the linear probe on your
labeled slices (features computed once; each candidate's probe scored by mean slice DSC on validation slices),
then writes the encoder's weights with the best selection into WEIGHTS_DIR (config.json, model.safetensors,
README.md, selection.json with every score). Use it under a name of your choice:
smp_diffusion_encoder.registry.register_encoder_from_folder("ddpm-ct-mine", WEIGHTS_DIR), then
smp.Unet("ddpm-ct-mine", encoder_weights="ct") or smp-diffusion finetune --encoder ddpm-ct-mine; timm loads it as
timm.create_model("local-dir:WEIGHTS_DIR", pretrained=True).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from smp_diffusion_encoder.cli._args import add_config_arguments, description, given
from smp_diffusion_encoder.finetune.selection_config import SelectionConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "select-features",
        help="choose timesteps and decoder blocks for your labeled slices",
        description=description(__doc__),
    )
    p.add_argument("root", type=Path, metavar="ROOT", help="FLARE 2022 root with labeled training cases")
    p.add_argument("--out", type=Path, required=True, metavar="WEIGHTS_DIR", help="weights folder to write")
    add_config_arguments(p, SelectionConfig)
    p.add_argument("--no-progress", action="store_true", help="do not print every candidate's score")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.finetune.selection import select_features

    result = select_features(
        args.root, SelectionConfig(**given(args, SelectionConfig)), out_dir=args.out, progress=not args.no_progress
    )
    print(
        f"chosen: timesteps {list(result.features.timesteps)}, blocks {list(result.features.blocks or ())}: "
        f"validation mean slice DSC {result.score:.4f} (the encoder's own selection: {result.baseline:.4f}; "
        f"{len(result.trials)} candidates scored) -> {result.folder}"
    )
    return 0
