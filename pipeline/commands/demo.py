"""``seg25d demo``: the main job on synthetic data, end to end, in about ten minutes on a laptop CPU."""

from __future__ import annotations

from pathlib import Path

from seg25d.pipeline.commands import add_device_arguments, device_overrides


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="synthetic vessels -> train projection25d -> predict -> evaluate -> "
                                                "report",
                                   description="The main job end to end on synthetic vessel volumes: generate them, "
                                               "train projection25d, predict the test split, evaluate, report.")
    parser.add_argument("--out", type=Path, default=Path("seg25d_demo"), help="output folder (default: seg25d_demo)")
    parser.add_argument("--minutes", type=float, default=8.0, help="training time budget (default: 8)")
    parser.add_argument("--cases", type=int, default=16, help="synthetic volumes to generate (default: 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training (default 0)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training config key (see seg25d train)")
    add_device_arguments(parser, precision_default="train.precision")
    parser.set_defaults(func=_demo)


def _demo(args) -> int:
    from seg25d.pipeline.allocator import keep_freed_memory
    from seg25d.pipeline.demo import run_demo

    keep_freed_memory()
    run_demo(args.out, args.minutes, args.cases, seed=args.seed, overrides=[*args.overrides, *device_overrides(args)])
    return 0
