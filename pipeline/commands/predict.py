"""`seg25d predict` (placeholder until its issue lands)."""

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="(not available yet)")
    p.set_defaults(func=_unavailable)


def _unavailable(args) -> int:
    print("seg25d predict: not available yet in this version", file=sys.stderr)
    return 2
