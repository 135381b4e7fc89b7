"""`seg25d manifest` (placeholder until its issue lands)."""

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("manifest", help="(not available yet)")
    p.set_defaults(func=_unavailable)


def _unavailable(args) -> int:
    print("seg25d manifest: not available yet in this version", file=sys.stderr)
    return 2
