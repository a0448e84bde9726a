"""Stand-in for the person who labels: copy some axial slices of a full label map into a partly labeled case folder.

In real use you label the slices in 3D Slicer or ITK-SNAP and save one label map per scan (unlabeled slices
empty) plus a sidecar listing the labeled slices. On the demo data a full label map exists, so this script
"labels" the slices you name by copying them from it: it writes ``CASE/label.nii.gz`` (those slices only, the
rest empty) and ``CASE/label.slices.json``, and links the image into ``CASE/`` if it is not there.

    python examples/label_slices.py IMAGE FULL_LABEL CASE_DIR --z 60 75 90 105
    python examples/label_slices.py IMAGE FULL_LABEL CASE_DIR --sidecar suggest/sidecars/CASE.slices.json

``--z``: canonical slice indices (slice 0 nearest the feet, as ``smp-diffusion suggest`` prints them);
``--sidecar``: label exactly the slices a sidecar lists (e.g. the one ``smp-diffusion suggest`` wrote: the
labeled slices plus its suggestions); ``--evenly N``: N slices evenly spaced over the slices with an organ.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from smp_diffusion_encoder.data.labeled_slices import read_sidecar, write_sidecar
from smp_diffusion_encoder.data.volume import read_volume, write_label_map


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", type=Path, help="the scan (a volume file)")
    p.add_argument("full_label", type=Path, help="its fully labeled map (the 'labeler')")
    p.add_argument("case", type=Path, help="case folder to write (image.nii.gz, label.nii.gz, label.slices.json)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--z", type=int, nargs="+", help="slices to label (canonical z)")
    which.add_argument("--sidecar", type=Path, help="label the slices this sidecar lists")
    which.add_argument("--evenly", type=int, metavar="N", help="N slices evenly spaced over the organ slices")
    args = p.parse_args(argv)
    full = read_volume(args.full_label, kind="label")
    if args.z is not None:
        zs = sorted(set(args.z))
    elif args.sidecar is not None:
        zs = list(read_sidecar(args.sidecar, full))
    else:
        organs = np.flatnonzero(full.array.reshape(full.array.shape[0], -1).max(1) > 0)
        zs = sorted({int(organs[int((i + 0.5) * len(organs) / args.evenly)]) for i in range(args.evenly)})
    partial = np.zeros_like(full.array)
    partial[zs] = full.array[zs]
    args.case.mkdir(parents=True, exist_ok=True)
    image = args.case / "image.nii.gz"
    if not image.exists():
        shutil.copyfile(args.image, image)
    write_label_map(partial, read_volume(image), args.case / "label.nii.gz")
    write_sidecar(
        args.case / "label.slices.json", zs, note=f"labeled with examples/label_slices.py from {args.full_label.name}"
    )
    print(f"labeled {len(zs)} slices of {args.case.name}: z = {' '.join(map(str, zs))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
