"""``seg25d manifest check``: validate a dataset manifest and every file it names."""

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


def _check(args) -> int:
    from seg25d.pipeline.errors import InputError
    from seg25d.pipeline.manifest import LabelSpec, check_manifest, read_label_spec

    spec = None
    if args.classes:
        try:
            names, values = zip(*(item.split("=", 1) for item in args.classes))
            spec = LabelSpec(names, tuple(int(v) for v in values))
        except ValueError as err:
            raise InputError(None, f"--classes takes NAME=VALUE pairs with integer values ({err})") from None
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
