"""``smp-diffusion phantom OUT_DIR``: write procedural phantom CT cases in the FLARE 2022 layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from smp_diffusion_encoder.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "phantom",
        help="write procedural abdominal CT phantoms (13 FLARE organs) in the FLARE 2022 layout",
        description="Write phantom CTs (int16 HU .nii.gz) and 13-organ label maps under OUT_DIR, laid out like "
        "FLARE 2022 (Training/FLARE22_LabeledCase50, Training/FLARE22_UnlabeledCase1-1000, Tuning).",
    )
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--labeled", type=int, default=4, help="labeled training cases (default 4)")
    p.add_argument("--unlabeled", type=int, default=8, help="unlabeled training cases (default 8)")
    p.add_argument("--tuning", type=int, default=0, help="labeled tuning cases (default 0)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed; same seed, same files (default 0)")
    p.add_argument("--preview", action="store_true", help="also write OUT_DIR/preview.png of the first case")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.data.phantom import generate_case, render_preview, write_phantom_dataset

    counts = {"--labeled": args.labeled, "--unlabeled": args.unlabeled, "--tuning": args.tuning}
    if any(n < 0 for n in counts.values()) or not any(counts.values()):
        raise ConfigError(f"case counts must be >= 0 and not all 0; got {counts}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0; got {args.seed}")
    if args.out_dir.exists() and not args.out_dir.is_dir():
        raise ConfigError(f"{args.out_dir}: exists and is not a folder")
    root = write_phantom_dataset(
        args.out_dir, n_labeled=args.labeled, n_unlabeled=args.unlabeled, n_tuning=args.tuning, seed=args.seed
    )
    print(f"wrote {args.labeled} labeled, {args.unlabeled} unlabeled, {args.tuning} tuning phantom cases under {root}")
    if args.preview:
        from smp_diffusion_encoder.data.phantom import DEFAULT_SHAPE, default_spacing

        offset = 0 if args.labeled else 10_000 if args.unlabeled else 20_000
        image, labels = generate_case(args.seed * 100_003 + offset + 1)
        has_labels = bool(args.labeled or (not args.unlabeled and args.tuning))
        path = render_preview(
            image, labels if has_labels else None, root / "preview.png", spacing_mm=default_spacing(DEFAULT_SHAPE)
        )
        print(f"preview: {path}")
    return 0
