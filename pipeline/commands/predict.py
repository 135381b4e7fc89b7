"""``seg25d predict``: masks for a manifest or files, with each input's exact geometry and format."""

from __future__ import annotations

from pathlib import Path

from seg25d.pipeline.commands import add_device_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="predict masks for a manifest or input files")
    parser.add_argument("--model", type=Path, nargs="+", required=True,
                        help="checkpoint (best.pt or last.pt of a run); several (e.g. the folds) average their probabilities")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", type=Path, help="manifest CSV; outputs are named <case_id> + input extension")
    source.add_argument("--input", nargs="+", type=Path,
                        help="image files, folders of them (nnU-Net channel files <case>_0000, _0001... form one "
                             "case) or DICOM folders")
    parser.add_argument("--split", choices=("train", "val", "test"), help="only this split of the manifest")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--probabilities", action="store_true", help="also write per-class probability maps")
    parser.add_argument("--tta", action="store_true", help="average over flips (4 passes)")
    parser.add_argument("--overwrite", action="store_true", help="predict again cases already in --out")
    parser.add_argument("--largest-component", nargs="+", metavar="CLASS",
                        help="keep only the largest connected component of these classes; 'all', or 'auto': the "
                             "classes where it raised validation Dice in training")
    add_device_arguments(parser, precision_default="fp32 on the CPU, auto on CUDA")
    parser.set_defaults(func=_predict)


def _predict(args) -> int:
    import os

    from seg25d.pipeline.errors import InputError
    from seg25d.pipeline.checkpoint import load_checkpoint
    from seg25d.pipeline.predict import jobs_from_manifest, predict_batch
    from seg25d.pipeline.predict_inputs import jobs_from_paths

    if args.split and not args.manifest:
        raise InputError("--split", "selects manifest rows; it does not apply to --input")
    if args.manifest:
        jobs = jobs_from_manifest(args.manifest, args.split)
    else:
        jobs = jobs_from_paths(args.input, int(load_checkpoint(args.model[0])["model_config"]["in_channels"]))
    report = predict_batch(args.model, jobs, args.out, args.probabilities, args.tta, args.overwrite,
                           largest_component=args.largest_component, device=args.device or "auto",
                           precision=args.precision)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"predicted {report['predicted']}, skipped {report['skipped']} (already done), "
              f"failed {report['failed']} -> {args.out}")
        for f in report["failures"]:
            print(f"  failed {f['case_id']}: {f['image']}: {f['reason']}")
        if report["failed"]:
            print(f"failures listed in {args.out / 'failures.csv'}")
    return 1 if report["failed"] else 0
