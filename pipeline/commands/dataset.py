"""``seg25d dataset import``: an nnU-Net, Decathlon or plain-folder dataset as a manifest with classes and folds;
``seg25d plan``: the dataset fingerprint and the training plan derived from it."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("dataset", help="import a dataset (nnU-Net, Decathlon, folders) as a manifest")
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    imp = sub.add_parser("import", help="write manifest.csv, its class sidecar and seeded folds for a dataset")
    imp.add_argument("--from", dest="kind", choices=("nnunet", "msd", "folder"), required=True,
                     help="layout: nnunet (DatasetXXX_Name/), msd (TaskXX_Name/), folder (--images/--labels globs)")
    imp.add_argument("source", nargs="?", type=Path, help="dataset folder (nnunet, msd)")
    imp.add_argument("--images", help="folder: glob of the image files, e.g. 'data/img/*.nii.gz'")
    imp.add_argument("--labels", help="folder: glob of the label files, paired with images by file name stem")
    imp.add_argument("--classes", nargs="+", metavar="NAME=VALUE", help="folder: index classes, e.g. liver=1 tumour=2 "
                                                                        "(default: inferred from the labels)")
    imp.add_argument("--channels", nargs="+", metavar="MODALITY", help="folder: modality of each channel, e.g. CT")
    imp.add_argument("--out", type=Path, required=True, help="manifest CSV to write (sidecar and folds beside it)")
    imp.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5); fold 0 is split 'val'")
    imp.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    imp.add_argument("--group-pattern", metavar="REGEX", help="patient id from the case id (first group of the "
                                                               "regex, e.g. '^(case\\d+)_'): a patient stays in one fold")
    imp.set_defaults(func=_import)

    plan = subparsers.add_parser("plan", help="fingerprint a manifest's training cases and print the plan")
    plan.add_argument("manifest", type=Path, help="manifest CSV")
    plan.add_argument("--config", default="vessels", help="preset or TOML file whose model the plan sizes")
    plan.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config key (repeatable)")
    plan.add_argument("--out", type=Path, help="also write the plan as JSON")
    plan.set_defaults(func=_plan)


def _import(args) -> int:
    from seg25d.pipeline.datasets import read_folder, read_msd, read_nnunet, write_import
    from seg25d.pipeline.errors import InputError
    from seg25d.pipeline.manifest import label_spec_from_pairs

    if args.kind == "folder":
        if args.source or not args.images:
            raise InputError("--from folder", "takes --images GLOB [--labels GLOB], not a folder")
        spec = label_spec_from_pairs(args.classes) if args.classes else None
        layout = read_folder(args.images, args.labels, spec, args.channels)
    else:
        if args.source is None or args.images or args.labels or args.classes or args.channels:
            raise InputError(f"--from {args.kind}", "takes the dataset folder only (classes and channels come from "
                                                    "its dataset.json)")
        layout = (read_nnunet if args.kind == "nnunet" else read_msd)(args.source)
    frame = write_import(layout, args.out, args.folds, args.seed, args.group_pattern)
    counts = frame.split.value_counts()
    classes = ", ".join(f"{c}={v}" for c, v in zip(layout.spec.classes, layout.spec.values))
    print(f"{len(frame)} cases ({', '.join(f'{counts[s]} {s}' for s in ('train', 'val', 'test') if s in counts)}), "
          f"channels {', '.join(layout.channels)}, classes {classes} ({layout.spec.encoding})")
    print(f"wrote {args.out} (+ {args.out.with_suffix('.json').name}, {args.out.stem}_folds.json)")
    return 0


def _plan(args) -> int:
    from seg25d.pipeline.config import load_config
    from seg25d.pipeline.planning import plan_from_manifest

    config = load_config(args.config, [*args.overrides, f"data.manifest='{args.manifest}'"])
    plan = plan_from_manifest(config)
    print(plan.summary())
    if args.out:
        from seg25d.pipeline.atomic import write_json

        write_json(args.out, plan.to_dict())
        print(f"wrote {args.out}")
    return 0
