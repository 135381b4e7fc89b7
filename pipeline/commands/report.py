"""``seg25d report``: a self-contained HTML page for an evaluation or training run."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="write an HTML report of an evaluation or training run folder")
    parser.add_argument("folder", type=Path, help="evaluation folder (seg25d evaluate --out) or run folder")
    parser.add_argument("--out", type=Path, help="HTML file (default: FOLDER/report.html)")
    parser.set_defaults(func=_report)


def _report(args) -> int:
    from seg25d.pipeline.report import write_report

    print(f"report: {write_report(args.folder, args.out)}")
    return 0
