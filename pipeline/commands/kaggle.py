"""`seg25d kaggle`: the UW-Madison GI Tract (Kaggle) layout: import a split, score a submission.

Each subcommand is one ``_add_<name>(subparsers)`` function that adds its parser and points
``func`` at one ``_run_<name>(args)`` function; add a new one to :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "kaggle",
        help="UW-Madison GI Tract (Kaggle) layout: import, score",
        description="Work with the UW-Madison GI Tract Image Segmentation layout "
                    "(ROOT/train.csv, ROOT/train/case{N}/case{N}_day{M}/scans/slice_*.png).",
    )
    sub = parser.add_subparsers(dest="kaggle_command", metavar="SUBCOMMAND")
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)


def _add_import(sub) -> None:
    p = sub.add_parser(
        "import",
        help="convert a split into NIfTI volumes + manifest",
        description="Write images/{case_day}.nii.gz, labels/{case_day}.nii.gz (bitmask: 1 large bowel, "
                    "2 small bowel, 4 stomach), manifest.csv (group = case) and manifest.json. "
                    "Without ROOT/<split>.csv only images are imported.",
    )
    p.add_argument("--root", required=True, type=Path, help="dataset root holding train.csv and train/")
    p.add_argument("--out", required=True, type=Path, help="output dataset folder (created if needed)")
    p.add_argument("--split", default="train", help="split folder under ROOT to import (default: train)")
    p.set_defaults(func=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    from seg25d.pipeline.kaggle.layout import import_kaggle
    from seg25d.pipeline.manifest import read_manifest

    manifest = import_kaggle(args.root, args.out, split=args.split)
    frame = read_manifest(manifest)
    labelled = int(frame["label"].notna().sum())
    print(f"imported {len(frame)} case-days ({labelled} with labels, {frame['group'].nunique()} cases) "
          f"-> {manifest}")
    return 0


def _add_score(sub) -> None:
    p = sub.add_parser(
        "score",
        help="competition score of a submission: 0.4 dice + 0.6 (1 - hausdorff)",
        description="Score id,class,predicted (RLE, row-major) against id,class,segmentation.",
    )
    p.add_argument("--submission", required=True, type=Path, help="submission CSV (id,class,predicted)")
    p.add_argument("--truth", required=True, type=Path, help="truth CSV (id,class,segmentation), e.g. train.csv")
    p.add_argument("--root", required=True, type=Path, help="dataset root; slice sizes come from the PNG names")
    p.add_argument("--split", default="train", help="image folder under ROOT (default: train)")
    p.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    p.add_argument("--empty-dice", choices=("skip", "one"), default="skip",
                   help="rows empty in both truth and prediction: skip them (default) or count as Dice 1")
    p.add_argument("--hausdorff-volume", choices=("union", "per_class"), default="union",
                   help="Hausdorff on the union of the organs per case-day (default) or per organ, averaged")
    p.set_defaults(func=_run_score)


def _run_score(args: argparse.Namespace) -> int:
    from seg25d.pipeline.atomic import write_json
    from seg25d.pipeline.kaggle.score import score_submission

    result = score_submission(args.submission, args.truth, args.root, empty_dice=args.empty_dice,
                              hausdorff_volume=args.hausdorff_volume, split=args.split)
    print(f"score     {_fmt(result['score'])}   ({result['n_rows']} rows, {result['n_case_days']} case-days; "
          f"empty dice: {args.empty_dice}, hausdorff volume: {args.hausdorff_volume})")
    print(f"dice      {_fmt(result['dice'])}   ({result['n_dice_rows']} rows counted)")
    print(f"hausdorff {_fmt(result['hausdorff'])}   ({result['n_hausdorff_volumes']} volumes; lower is better)")
    for organ, value in result["dice_per_class"].items():
        print(f"  dice {organ:<12} {_fmt(value)}")
    if args.json is not None:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


# One entry per subcommand; `train`, `submit`, `cv` go here when they exist.
SUBCOMMANDS = (_add_import, _add_score)
