"""``smp-diffusion suggest SCANS... --model DIR/model --out OUT``: which axial slices to label next.

Scores every unlabeled axial slice of SCANS with the model's uncertainty (--measure: cm² of the slice, or the
expected Dice loss over the organs on it), then picks
--n slices greedily, none closer than --min-distance-mm along z to a labeled slice or to another pick of the same
scan, spread over scans (--scan-decay). SCANS: NIfTI, NRRD or MetaImage files, DICOM series folders, case folders
(an image and, optionally, its label map) or folders of them. Labeled slices are never suggested: a case folder's
label map (the slices its label.slices.json sidecar lists, or every slice without one), the run's DIR/split.json
beside MODEL_DIR when there is one, and --labeled files (split.json, sidecars, label maps). Writes
OUT/suggestions.csv and OUT/suggestions.json (rank, scan, z, slice_in_file, position_mm, score, why),
OUT/contact_sheet.png (the top slices with the current prediction) and OUT/sidecars/<scan>.slices.json (labeled +
suggested slices: copy beside the label map once the suggestions are labeled, then retrain with
smp-diffusion finetune CASES --budget all).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from smp_diffusion_encoder.cli._args import add_config_arguments, description, given
from smp_diffusion_encoder.labeling.config import SuggestConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "suggest",
        help="rank axial slices of your scans by how much labeling them should help",
        description=description(__doc__),
    )
    p.add_argument(
        "scans",
        type=Path,
        nargs="+",
        metavar="SCANS",
        help="volume files, DICOM series folders, case folders or folders of them",
    )
    p.add_argument("--model", type=Path, required=True, metavar="MODEL_DIR", help="model folder (finetune's DIR/model)")
    p.add_argument("--out", type=Path, required=True, metavar="OUT", help="folder for the suggestions")
    p.add_argument(
        "--labeled",
        type=Path,
        nargs="+",
        default=[],
        metavar="FILE",
        help="more labeled slices: split.json files, sidecars (.slices.json) or label maps (default: none)",
    )
    p.add_argument(
        "--label-table",
        type=Path,
        default=None,
        metavar="FILE",
        help='JSON {"segment name": FLARE id} for .seg.nrrd label maps (default: the FLARE organ names)',
    )
    add_config_arguments(p, SuggestConfig)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import warnings

    from smp_diffusion_encoder.data.slicer_seg import read_label_table
    from smp_diffusion_encoder.inference import load_model
    from smp_diffusion_encoder.labeling.inputs import find_scans, labeled_slices, read_scan_images
    from smp_diffusion_encoder.labeling.suggest import suggest, write_suggestions

    tick = time.perf_counter()
    config = SuggestConfig(**given(args, SuggestConfig))
    table = read_label_table(args.label_table) if args.label_table else None
    scans = find_scans(args.scans)
    model = load_model(args.model)
    images = read_scan_images(scans)
    labeled = labeled_slices(scans, images, args.labeled, table=table)
    run_split = args.model.parent / "split.json"
    if run_split.is_file() and run_split not in args.labeled:
        with warnings.catch_warnings():  # the run's cases are often not among the scans: nothing to say then
            warnings.simplefilter("ignore", UserWarning)
            extra = labeled_slices(scans, images, [run_split], table=table)
        labeled = {s: labeled[s] | extra[s] for s in labeled}
    result = suggest(model, scans, config, labeled=labeled, images=images, progress=not args.no_progress)
    written = write_suggestions(result, args.out)
    for s in result.suggestions:
        print(f"{s.rank:3d}. {s.scan} z={s.z} (slice {s.slice_in_file} in the file, S {s.position_mm:.1f} mm): {s.why}")
    if len(result.suggestions) < config.n:
        print(
            f"only {len(result.suggestions)} of {config.n} slices could be suggested: the others are labeled or "
            f"within {config.min_distance_mm:g} mm of a labeled or suggested slice (lower --min-distance-mm for more)"
        )
    n_labeled = sum(len(z) for z in labeled.values())
    files = [p.name for p in written if p.parent.name != "sidecars"]
    sidecars = len(written) - len(files)
    print(
        f"{result.candidates} unlabeled slices of {len(scans)} scans scored ({n_labeled} labeled slices avoided) in "
        f"{time.perf_counter() - tick:.1f} s -> {args.out}: "
        + ", ".join(files)
        + (f", sidecars/ ({sidecars} scans)" if sidecars else "")
    )
    return 0
