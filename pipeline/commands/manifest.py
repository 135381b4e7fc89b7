"""``seg25d manifest check|split``: validate a manifest and every file it names; assign splits by group."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("manifest", help="validate dataset manifests (CSV + class sidecar)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    check = sub.add_parser("check", help="open every file of a manifest and report problems (exit 1 on any)")
    check.add_argument("manifest", type=Path, help="manifest CSV (case_id,image,label,split[,group])")
    check.add_argument("--classes", nargs="+", metavar="NAME=VALUE",
                       help="declare index classes instead of the sidecar JSON, e.g. vessel=1")
    check.set_defaults(func=_check)
    split = sub.add_parser("split", help="write a copy with train/val/test splits drawn by group, seeded")
    split.add_argument("manifest", type=Path, help="manifest CSV; group (or case_id) keeps related cases together")
    split.add_argument("--out", type=Path, required=True, help="new manifest CSV (its class sidecar is copied)")
    split.add_argument("--val", type=float, default=0.15, help="share of cases for validation (default 0.15)")
    split.add_argument("--test", type=float, default=0.25, help="share of cases for testing (default 0.25)")
    split.add_argument("--seed", type=int, default=0, help="seed of the group shuffle (default 0)")
    split.set_defaults(func=_split)


def _check(args) -> int:
    from seg25d.pipeline.manifest import check_manifest, label_spec_from_pairs, read_label_spec

    spec = label_spec_from_pairs(args.classes) if args.classes else None
    table, problems = check_manifest(args.manifest, spec)
    if spec is None and read_label_spec(args.manifest) is None:
        print(f"note: no class sidecar {args.manifest.with_suffix('.json')}; classes inferred from the label values")
    print(table.to_string(index=False))
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for line in problems:
            print(f"  {line}")
        return 1
    print(f"\n{len(table)} case(s), no problems")
    return 0


def _split(args) -> int:
    from seg25d.pipeline.manifest import assign_splits

    frame = assign_splits(args.manifest, args.out, args.val, args.test, args.seed)
    counts = frame.groupby("split").agg(cases=("case_id", "size"), groups=("group", "nunique"))
    print(counts.to_string())
    print(f"wrote {args.out}")
    return 0
