"""`seg25d evaluate`: score predicted label volumes against a manifest's reference labels."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from seg25d.pipeline.metrics import EMPTY_POLICIES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="per-class dice, iou, precision, sensitivity, specificity, hd95 and volumes",
        description="Score predictions (<case_id> + the label's extension, in --pred) against the labels of a "
                    "manifest; writes metrics.csv (one row per case and class) and summary.json (per-class "
                    "means). Exit status 1 when any case could not be scored.",
    )
    p.add_argument("--pred", required=True, metavar="DIR", help="folder of predicted label volumes")
    p.add_argument("--manifest", required=True, metavar="M.csv",
                   help="manifest CSV with the reference labels (its .json sidecar gives the classes)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for metrics.csv and summary.json")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="score only these classes (default: all)")
    p.add_argument("--split", choices=("train", "val", "test"), help="score only the cases of this split")
    p.add_argument("--empty-policy", choices=EMPTY_POLICIES, default="nan",
                   help="empty masks: 'nan' leaves 0/0 metrics undefined (excluded from means, MONAI-like); "
                        "'one' scores both-empty as perfect and one-sided empty as worst case (default: nan)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seg25d.pipeline.evaluate import evaluate

    frame = evaluate(args.pred, args.manifest, args.out, classes=args.classes, empty=args.empty_policy,
                     split=args.split)
    failed = frame.loc[frame["error"].notna(), ["case_id", "error"]]
    print(_mean_table(frame))
    n_cases = frame["case_id"].nunique()
    print(f"{n_cases - len(failed)} of {n_cases} cases scored (empty-mask policy: {args.empty_policy})")
    for case_id, error in failed.itertuples(index=False):
        print(f"failed {case_id}: {error}")
    out = Path(args.out)
    print(f"wrote {out / 'metrics.csv'} and {out / 'summary.json'}")
    return 1 if len(failed) else 0


def _mean_table(frame) -> str:
    """Per-class mean dice and hd95 (over the cases where each is defined), as in summary.json."""
    from seg25d.pipeline.metrics import summarize

    summary = summarize(frame)
    lines = [f"{'class':<24} {'cases':>5} {'dice':>8} {'hd95 mm':>9}"]
    for name, entry in summary["classes"].items():
        lines.append(f"{name:<24} {entry['n_cases']:>5} {_fmt(entry['dice']['mean'], 8)} "
                     f"{_fmt(entry['hd95']['mean'], 9)}")
    if len(summary["classes"]) > 1:
        fg = summary["foreground_mean"]
        lines.append(f"{'(mean over classes)':<24} {'':>5} {_fmt(fg['dice'], 8)} {_fmt(fg['hd95'], 9)}")
    return "\n".join(lines)


def _fmt(value: float, width: int) -> str:
    return f"{value:>{width}.4f}" if math.isfinite(value) else f"{'n/a':>{width}}"
