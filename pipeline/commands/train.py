"""``seg25d train``: train any registered model from a preset or TOML config."""

from __future__ import annotations

import os
from pathlib import Path

from seg25d.pipeline.commands import add_device_arguments, device_overrides


def register(subparsers) -> None:
    from seg25d.pipeline.config import list_presets

    parser = subparsers.add_parser("train", help=f"train a model (presets: {', '.join(list_presets())}; or a TOML "
                                                 "config)",
                                   description="Train any registered model from a preset or TOML config into a run "
                                               "folder; a killed run resumes with --resume.")
    parser.add_argument("--config", default="vessels", help="preset name or TOML file (default: vessels)")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, metrics.csv, curves.png)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.max_steps=200 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    add_device_arguments(parser, precision_default="train.precision")
    parser.set_defaults(func=_train)


def _train(args) -> int:
    from seg25d.pipeline.allocator import keep_freed_memory
    from seg25d.pipeline.callbacks import from_environment
    from seg25d.pipeline.config import load_config
    from seg25d.pipeline.outputs import check_out_dir
    from seg25d.pipeline.training import train

    keep_freed_memory()
    config = load_config(args.config, [*args.overrides, *device_overrides(args)])
    check_out_dir(args.out)
    result = train(config, args.out, resume=args.resume, callbacks=from_environment())
    if int(os.environ.get("RANK", "0")) == 0:
        note = " (stopped by train.max_minutes)" if result.stopped_by_time else ""
        best = (f"best validation Dice {result.best_score:.4f}" if result.validated
                else "no validation cases: best.pt holds the lowest training loss")
        print(f"trained {result.steps} steps{note}; {best}")
        print(f"checkpoints: {result.last_checkpoint}" + (f", {result.best_checkpoint}" if result.best_checkpoint else ""))
    return 0
