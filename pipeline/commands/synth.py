"""`seg25d synth`: write the built-in synthetic datasets (vessels, GI tract)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic dataset (vessels: MR angiography volumes; gi: UW-Madison GI Tract layout)",
        description="Generate the project's synthetic datasets, deterministic by seed.",
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True

    vessels = kinds.add_parser(
        "vessels",
        help="MR-angiography-like volumes with branching vessels, as a dataset folder with a manifest",
        description="Write images/, labels/ (NIfTI), manifest.csv and its label spec manifest.json to --out.",
    )
    vessels.add_argument("--out", required=True, help="dataset folder to write")
    vessels.add_argument("--n", type=int, default=16, help="number of volumes (default: 16)")
    vessels.add_argument("--shape", type=int, nargs=3, default=(64, 96, 96), metavar=("D", "H", "W"),
                         help="volume shape in voxels (default: 64 96 96)")
    vessels.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("SD", "SH", "SW"),
                         help="voxel size in mm (default: 1 1 1)")
    vessels.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    vessels.set_defaults(func=_run_vessels)

    gi = kinds.add_parser(
        "gi",
        help="abdominal MR case-days in the UW-Madison GI Tract (Kaggle) layout",
        description="Write train/case{N}/case{N}_day{M}/scans/slice_*.png (16-bit) and train.csv to --out.",
    )
    gi.add_argument("--out", required=True, help="dataset root to write")
    gi.add_argument("--cases", type=int, default=8, help="number of patients (default: 8)")
    gi.add_argument("--days", type=int, nargs=2, default=(2, 3), metavar=("MIN", "MAX"),
                    help="scan days per patient, inclusive range (default: 2 3)")
    gi.add_argument("--slices", type=int, nargs=2, default=(40, 64), metavar=("MIN", "MAX"),
                    help="slices per scan, inclusive range (default: 40 64; the competition has 144)")
    gi.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    gi.set_defaults(func=_run_gi)


def _run_vessels(args: argparse.Namespace) -> int:
    from seg25d.pipeline.manifest import read_manifest
    from seg25d.pipeline.synth.vessels import write_vessel_dataset

    manifest = write_vessel_dataset(args.out, n=args.n, shape=tuple(args.shape), seed=args.seed,
                                    spacing=tuple(args.spacing))
    counts = read_manifest(manifest)["split"].value_counts()
    splits = ", ".join(f"{counts.get(name, 0)} {name}" for name in ("train", "val", "test"))
    print(f"wrote {args.n} vessel volumes {'x'.join(map(str, args.shape))} ({splits})")
    print(f"manifest: {manifest}")
    return 0


def _run_gi(args: argparse.Namespace) -> int:
    from seg25d.pipeline.synth.gi import write_gi_dataset

    csv_path = write_gi_dataset(args.out, cases=args.cases, seed=args.seed, days=tuple(args.days),
                                slices=tuple(args.slices))
    with open(csv_path) as handle:
        ids = [line.split(",", 1)[0] for line in handle.readlines()[1:]]
    case_days = {i.rsplit("_slice_", 1)[0] for i in ids}
    print(f"wrote {args.cases} cases, {len(case_days)} case-days, {len(set(ids))} slices")
    print(f"train.csv: {csv_path}")
    return 0
