"""`seg25d kaggle`: the UW-Madison GI Tract (Kaggle) layout: import, score, train folds, submit, cv.

Each subcommand is one ``_add_<name>(subparsers)`` function that adds its parser and points
``func`` at one ``_run_<name>(args)`` function; add a new one to :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from seg25d.pipeline.commands import add_device_arguments, device_overrides


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "kaggle",
        help="UW-Madison GI Tract (Kaggle) layout: import, score, train, submit, cv",
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


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="cross-validated training: import once, train each fold, score its held-out case-days",
        description="Import ROOT's train split once into RUN_DIR/data, then train fold k (or every fold in "
                    "turn) into RUN_DIR/fold{k} with case-level GroupKFold, predict the fold's held-out "
                    "case-days with its best.pt and score them: val_submission.csv, val_truth.csv, "
                    "fold_score.json. A root with one case (or --folds 0) trains on everything into "
                    "RUN_DIR/full without a fold score.",
    )
    p.add_argument("--root", required=True, type=Path, help="dataset root holding train.csv and train/")
    p.add_argument("--out", required=True, type=Path, help="run folder (data/, fold{k}/, workflow.json)")
    p.add_argument("--config", default="gi", help="preset name or TOML file (default: gi)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set model.name=projection25d (repeatable; applied last)")
    p.add_argument("--folds", type=int, default=5,
                   help="case-level cross-validation folds (default: 5; 0: one model on all cases)")
    p.add_argument("--fold", type=int, default=None, help="train only this fold (default: every fold in turn)")
    p.add_argument("--exclude", type=Path, default=None, metavar="FILE",
                   help="file of case-day ids (case7_day0) or case ids (case7) to leave out, one per line, # comments")
    p.add_argument("--seed", type=int, default=0, help="train.seed; also shuffles the fold assignment (default: 0)")
    p.add_argument("--resume", action="store_true", help="continue each fold from its last.pt")
    add_device_arguments(p, precision_default="train.precision")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from seg25d.pipeline.allocator import keep_freed_memory
    from seg25d.pipeline.kaggle.workflow import train_folds

    keep_freed_memory()
    overrides = [*args.overrides, *device_overrides(args)]
    results = train_folds(args.root, args.out, config=args.config, overrides=overrides, folds=args.folds,
                          fold=args.fold, exclude_file=args.exclude, seed=args.seed, resume=args.resume)
    scored = [r for r in results if r.score is not None]
    print(f"trained {len(results)} run(s) in {args.out}; {len(scored)} with a fold score"
          + (f" (seg25d kaggle cv --run {args.out})" if scored else ""))
    return 0


def _add_submit(sub) -> None:
    p = sub.add_parser(
        "submit",
        help="predict a split with one or more checkpoints into a submission CSV",
        description="Average the per-class probabilities of every --model on each case-day of ROOT/test "
                    "(ROOT/train when there is no test folder), threshold, drop small 2D components and write "
                    "id,class,predicted (RLE row-major; empty for no mask) in sample_submission.csv's order "
                    "when ROOT has one, else by case-day, slice and class.",
    )
    p.add_argument("--model", dest="models", action="append", required=True, type=Path, metavar="CKPT",
                   help="checkpoint (.pt); repeat to ensemble")
    p.add_argument("--root", required=True, type=Path, help="dataset root holding test/ or train/")
    p.add_argument("--out", required=True, type=Path, help="submission CSV to write")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default: 0.5)")
    p.add_argument("--min-area", type=int, default=0, metavar="N",
                   help="drop 4-connected components smaller than N pixels per slice and class (default: 0)")
    p.add_argument("--split", choices=("test", "train"), default=None,
                   help="image folder under ROOT (default: test when present, else train)")
    p.add_argument("--tta", action="store_true", help="also average every model over row and column flips")
    add_device_arguments(p)
    p.set_defaults(func=_run_submit)


def _run_submit(args: argparse.Namespace) -> int:
    from seg25d.pipeline.kaggle.workflow import submit

    result = submit(args.models, args.root, args.out, threshold=args.threshold, min_area=args.min_area,
                    split=args.split, tta=args.tta, device=args.device or "auto")
    print(f"wrote {result.n_rows} rows ({result.n_nonempty} with a mask) for {len(result.case_days)} case-days of "
          f"{args.root / result.split} with {len(args.models)} model(s) -> {result.path} "
          f"(row order: {result.order_source})")
    return 0


def _add_cv(sub) -> None:
    p = sub.add_parser(
        "cv",
        help="cross-validation table of a kaggle train run",
        description="Read RUN_DIR/fold*/fold_score.json, print fold, case-days, score, dice, hausdorff and "
                    "per-organ dice with the mean, and write RUN_DIR/cv.json and RUN_DIR/cv.csv.",
    )
    p.add_argument("--run", required=True, type=Path, help="run folder of seg25d kaggle train")
    p.set_defaults(func=_run_cv)


def _run_cv(args: argparse.Namespace) -> int:
    from seg25d.pipeline.kaggle.workflow import collect_cv, format_cv_table

    result = collect_cv(args.run)
    print(format_cv_table(result))
    expected = result["folds_expected"]
    if expected and expected > result["n_folds"]:
        print(f"note: {result['n_folds']} of {expected} folds have a score")
    print(f"wrote {args.run / 'cv.json'} and {args.run / 'cv.csv'}")
    return 0


# One entry per subcommand.
SUBCOMMANDS = (_add_import, _add_score, _add_train, _add_submit, _add_cv)
