"""``seg25d bench``: operators, models, side-by-side comparisons and scaling; tables plus JSON/CSV."""

from __future__ import annotations

from pathlib import Path

from seg25d.pipeline.commands import add_device_arguments, device_overrides
from seg25d.pipeline.turns import TURN_SECONDS


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks: operators, models, compare, ablation, oracle, scaling, "
                                                 "memory",
                                   description="Measure the projectors and the models: speed, memory and accuracy "
                                               "under one budget; each writes a table plus JSON/CSV.")
    sub = parser.add_subparsers(dest="bench", metavar="BENCH")
    sub.required = True

    ops = sub.add_parser("operators", help="projectors against scipy/grid_sample baselines")
    ops.add_argument("--size", type=int, default=128, help="cube size in voxels (default 128)")
    ops.add_argument("--directions", type=int, default=32, help="angles about D (default 32)")
    ops.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    ops.add_argument("--out", type=Path, help="JSON file for the results")
    ops.set_defaults(func=_operators)

    models = sub.add_parser("models", help="parameters and whole-volume forward time of every model")
    models.add_argument("--shape", type=int, nargs=3, default=[64, 96, 96], metavar=("D", "H", "W"))
    models.add_argument("--models", nargs="+", help="default: all registered")
    models.add_argument("--out", type=Path, help="CSV file for the results")
    add_device_arguments(models)
    models.set_defaults(func=_models)

    compare = sub.add_parser("compare", help="train every model under the same time budget, then test")
    compare.add_argument("--manifest", type=Path, required=True, help="manifest with train, val and test splits")
    compare.add_argument("--budget-minutes", type=float, required=True, help="training time per model")
    compare.add_argument("--models", nargs="+", metavar="NAME[:KEY=VALUE,...]",
                         help="default: projection25d slicestack25d unet2d unet3d monai_unet; options after a colon "
                              "change that entry's model options, e.g. projection25d:scale=1")
    compare.add_argument("--out", type=Path, required=True, help="folder for runs and compare.csv/json/md")
    compare.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    compare.add_argument("--config", default="vessels", help="training preset or TOML (default: vessels)")
    compare.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="extra config override for every model")
    compare.add_argument("--turn-seconds", type=float, default=TURN_SECONDS, metavar="S",
                         help="the models train in turns of S seconds of steps each, so all meet the machine's slow "
                              "and fast minutes alike; 0: one after another (default %(default)g)")
    compare.add_argument("--encoder", metavar="NAME",
                         help="also train each model with a 2D U-Net on this smp/timm encoder, random weights "
                              "(needs seg25d[encoders])")
    add_device_arguments(compare, precision_default="train.precision")
    compare.set_defaults(func=_compare)

    ablation = sub.add_parser("ablation", help="the steps from the paper's model to the default, each trained")
    ablation.add_argument("--manifest", type=Path, required=True, help="manifest with train, val and test splits")
    ablation.add_argument("--budget-minutes", type=float, required=True, help="training time per entry")
    ablation.add_argument("--out", type=Path, required=True, help="folder for runs and ablation.csv/json/md")
    ablation.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    ablation.add_argument("--entries", type=int, nargs="+", metavar="N",
                          help="run only these entries of the ladder, numbered from 1 as in the docs (default all)")
    ablation.add_argument("--turn-seconds", type=float, default=TURN_SECONDS, metavar="S",
                          help="the entries train in turns of S seconds of steps each, so all meet the machine's slow "
                               "and fast minutes alike; 0: one after another (default %(default)g)")
    ablation.set_defaults(func=_ablation)

    oracle = sub.add_parser("oracle", help="Dice of perfect view masks lifted back, per direction set")
    oracle.add_argument("--manifest", type=Path, required=True, help="manifest with labels")
    oracle.add_argument("--split", default="test", choices=("train", "val", "test"), help="cases to use (default test)")
    oracle.add_argument("--slabs", type=int, nargs="+", default=[1], metavar="N",
                        help="slab counts per view to lift from (default 1: whole rays; above 1 for the axis views)")
    oracle.add_argument("--out", type=Path, help="CSV file for the results")
    oracle.set_defaults(func=_oracle)

    scaling = sub.add_parser("scaling", help="step time and memory against cube size, a fresh process each")
    scaling.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128, 192, 256],
                         help="cube sizes (default 64 96 128 192 256)")
    scaling.add_argument("--models", nargs="+", help="default: projection25d unet3d monai_unet")
    scaling.add_argument("--out", type=Path, required=True, help="folder for scaling.csv/json/png")
    scaling.add_argument("--memory-limit-gb", type=float, help="stop a run above this resident memory "
                                                                "(default: min(16, 75%% of RAM))")
    scaling.add_argument("--repeats", type=int, default=5, help="timed repeats per size; the median is reported")
    scaling.add_argument("--precision", choices=("fp32", "bf16", "fp16", "auto"), default="fp32",
                         help="of the training steps, as train.precision (default fp32)")
    add_device_arguments(scaling)
    scaling.set_defaults(func=_scaling)

    memory = sub.add_parser("memory", help="training memory and step time: preprocessed cache against in memory")
    memory.add_argument("--n", type=int, default=400,
                        help="synthetic volumes, compared with the first n/10 (default 400)")
    memory.add_argument("--shape", type=int, nargs=3, default=[128, 128, 128], metavar=("D", "H", "W"))
    memory.add_argument("--steps", type=int, default=20, help="training steps per run (default 20)")
    memory.add_argument("--models", nargs="+", default=["projection25d", "unet2d"])
    memory.add_argument("--workers", type=int, default=2, help="loader workers of the cached runs (default 2)")
    memory.add_argument("--repeats", type=int, default=1,
                        help="step-time pairs per model, the two modes trained in turns (default 1)")
    memory.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every run")
    memory.add_argument("--out", type=Path, required=True, help="folder for data, cache, runs, memory.csv/json")
    add_device_arguments(memory, precision_default="train.precision")
    memory.set_defaults(func=_memory)

    report = sub.add_parser("report", help="docs/benchmarks.md from the results files: one section per benchmark",
                            description="Write one Markdown section per benchmark found in the results files "
                                        "(JSON) under each DIR: its table, the command that regenerates it and "
                                        "the machine, torch version and date it ran on.")
    report.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="folders (or files) of results")
    report.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"),
                        help="Markdown file to write (default docs/benchmarks.md)")
    report.set_defaults(func=_report)


def _write_rows(path: Path, frame, rows: list[dict], benchmark: str) -> None:
    """CSV, or JSON with the provenance that ``bench report`` reads when ``path`` ends in .json."""
    from seg25d.pipeline.atomic import write_csv, write_json
    from seg25d.pipeline.provenance import provenance

    if path.suffix == ".json":
        write_json(path, {"benchmark": benchmark, "provenance": provenance(), "rows": rows})
    else:
        write_csv(path, frame)


def _operators(args) -> int:
    from seg25d.pipeline.atomic import write_json
    from seg25d.pipeline.bench.operators import bench_operators, format_operators
    from seg25d.pipeline.provenance import provenance

    result = bench_operators(args.size, args.directions, args.repeats)
    print(format_operators(result))
    if args.out:
        write_json(args.out, {**result, "benchmark": "operators", "provenance": provenance()})
    return 0


def _models(args) -> int:
    import pandas as pd

    from seg25d.pipeline.bench.models import bench_models

    rows = bench_models(tuple(args.shape), models=args.models, device=args.device or "auto")
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False))
    if args.out:
        _write_rows(args.out, frame, rows, "models")
    return 0


def _compare(args) -> int:
    from seg25d.pipeline.bench.compare import DEFAULT_MODELS, bench_compare

    bench_compare(args.manifest, args.budget_minutes, args.out, args.models or DEFAULT_MODELS, args.seed,
                  args.config, (*args.overrides, *device_overrides(args)), turn_seconds=args.turn_seconds,
                  encoder=args.encoder)
    print((args.out / "compare.md").read_text(encoding="utf-8"))
    return 0


def _ablation(args) -> int:
    from seg25d.pipeline.bench.ablation import bench_ablation

    bench_ablation(args.manifest, args.budget_minutes, args.out, args.seed, entries=args.entries,
                   turn_seconds=args.turn_seconds)
    print((args.out / "ablation.md").read_text(encoding="utf-8"))
    return 0


def _oracle(args) -> int:
    import pandas as pd

    from seg25d.pipeline.bench.oracle import bench_oracle

    rows = bench_oracle(args.manifest, args.split, slabs=args.slabs)
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        _write_rows(args.out, frame, rows, "oracle")
    return 0


def _scaling(args) -> int:
    from seg25d.pipeline.bench.scaling import bench_scaling

    frame = bench_scaling(args.sizes, args.out, args.models, args.memory_limit_gb, repeats=args.repeats,
                          precision=args.precision, device=args.device or "auto")
    cols = [c for c in ("model", "size", "status", "step_seconds", "step_peak_extra_mb", "infer_seconds",
                        "infer_peak_extra_mb") if c in frame]
    print(frame[cols].to_string(index=False))
    for model, group in frame[frame.status == "ok"].groupby("model"):
        print(f"{model}: largest cube trained as a whole volume {group['size'].max()}^3")
    print(f"figure: {args.out / 'scaling.png'}")
    return 0


def _memory(args) -> int:
    from seg25d.pipeline.bench.memory import bench_memory, format_memory

    print(format_memory(bench_memory(args.out, args.n, args.shape, args.steps, args.models, args.workers,
                                     overrides=(*args.overrides, *device_overrides(args)), repeats=args.repeats)))
    return 0


def _report(args) -> int:
    from seg25d.pipeline.bench.report import write_benchmarks

    print(f"wrote {write_benchmarks(args.dirs, args.out)}")
    return 0
