"""``smp-diffusion check-data PATH``: read every volume the way training will, and report problems.

PATH is a FLARE 2022 root, a volume file (NIfTI, NRRD, MetaImage), a DICOM series folder, or any folder of
them; a case folder (a label map such as label.nii.gz and its image: image.nii.gz or a DICOM series folder), at
any depth (the shipped demo_data: train/ and test/ folders of case folders), is checked as one labeled case.
Each case prints one line: shape (x, y, z voxels), spacing (mm), HU range and, for label maps, the FLARE organs
present, then one WARNING line per geometry warning (a corrected gantry tilt, a NIfTI whose
qform and sform disagree). The first bad file stops the run with exit status 2 (``--keep-going``: all
problems are listed, then exit status 2 if there were any). DICOM series whose slices are not equally
spaced (variable spacing, missing slices) are problems: no grid places them where they were acquired.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from smp_diffusion_encoder.cli._args import description
from smp_diffusion_encoder.data.remap import CONVENTIONS
from smp_diffusion_encoder.errors import SmpDiffusionError

if TYPE_CHECKING:
    from smp_diffusion_encoder.data.flare import Case
    from smp_diffusion_encoder.data.volume import Volume


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check-data",
        help="read a dataset (FLARE root, NIfTI file, DICOM folder) and report problems",
        description=description(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "path", type=Path, metavar="PATH", help="FLARE root, volume file, DICOM series folder, or folder of them"
    )
    p.add_argument(
        "--labels-convention",
        choices=sorted(CONVENTIONS),
        default="flare",
        help="label ids of the label maps (remapped to FLARE ids for the summary; default: flare)",
    )
    p.add_argument("--keep-going", action="store_true", help="list all problems instead of stopping at the first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import warnings

    from tqdm import tqdm

    from smp_diffusion_encoder.errors import GeometryWarning

    cases = _cases(args.path)
    problems: list[str] = []
    n_warnings = 0
    for case in tqdm(cases, desc="check-data", unit="case", disable=None, file=sys.stderr):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", GeometryWarning)
            try:
                line = _check_case(case, args.labels_convention)
            except SmpDiffusionError as err:
                if not args.keep_going:
                    raise
                problems.append(f"{type(err).__name__}: {err}")
                line = f"{case.case_id:<24} PROBLEM {type(err).__name__}: {err}"
        tqdm.write(line)
        for w in caught:
            if issubclass(w.category, GeometryWarning):
                n_warnings += 1
                tqdm.write(f"{case.case_id:<24} WARNING {w.message}")
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    n_labeled = sum(c.label is not None for c in cases)
    print(f"{len(cases)} cases ({n_labeled} labeled), {len(problems)} problems, {n_warnings} warnings")
    if problems:
        print(f"{len(problems)} problems:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    return 0


def _cases(path: Path) -> list[Case]:
    from smp_diffusion_encoder.data.dicom import is_dicom_folder
    from smp_diffusion_encoder.data.flare import Case, FlareDataset, find_cases

    if path.is_file() or is_dicom_folder(path) or not path.exists():
        return [Case(path.name, path)]
    if (path / "Training").is_dir() or (path / "Tuning").is_dir():
        return FlareDataset.discover(path).cases
    return find_cases(path)


def _check_case(case: Case, convention: str) -> str:
    import numpy as np

    from smp_diffusion_encoder.data.remap import FLARE_NUM_CLASSES, FLARE_ORGANS, remap_labels
    from smp_diffusion_encoder.data.volume import check_label_ids, check_pair, read_volume

    image = read_volume(case.image, kind="image")
    line = f"{case.case_id:<24} {_describe(image)}  HU {image.array.min():.0f}..{image.array.max():.0f}"
    if case.label is None:
        return line
    label = read_volume(case.label, kind="label")
    check_pair(image, label)
    if convention == "flare":
        check_label_ids(label, range(FLARE_NUM_CLASSES))
    ids = np.unique(remap_labels(label.array, convention))
    organs = [FLARE_ORGANS[i - 1] for i in ids if i > 0]
    return f"{line}  organs ({len(organs)}): {', '.join(organs) or 'none'}"


def _describe(volume: Volume) -> str:
    shape = "x".join(str(n) for n in volume.array.shape[::-1])
    spacing = "x".join(f"{s:.3g}" for s in volume.spacing[::-1])
    return f"{shape:<12} {spacing} mm"
