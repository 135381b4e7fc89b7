"""``seg25d preprocess``: write a manifest's training and validation cases to the preprocessed-case cache."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("preprocess", help="resample and normalise a manifest's cases once, into the "
                                                      "cache that train reads")
    parser.add_argument("manifest", type=Path, help="manifest CSV")
    parser.add_argument("--config", default="vessels", help="preset name or TOML file whose data.* settings are the "
                                                            "plan (default: vessels)")
    parser.add_argument("--out", type=Path, help="cache folder (default: data.cache, else $SEG25D_CACHE or "
                                                 "~/.cache/seg25d)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, as for train (repeatable)")
    parser.set_defaults(func=_preprocess)


def _preprocess(args) -> int:
    from seg25d.pipeline.cache import CacheStats, prepare_data, resolve_cache_dir
    from seg25d.pipeline.config import load_config
    from seg25d.pipeline.errors import InputError

    config = load_config(args.config, [*args.overrides, f"data.manifest={str(args.manifest)!r}"])
    root = args.out or resolve_cache_dir(config["data"]["cache"])
    if root is None:
        raise InputError("data.cache", "is 'off'; give --out CACHE to preprocess anyway")
    stats = CacheStats()
    _, prep, train, val = prepare_data(config, root, progress=config["train"]["progress"], stats=stats)
    folder = train[0].image_path.parent
    size = sum(p.stat().st_size for c in train + val for p in (c.image_path, c.masks_path) if p is not None)
    rate = f", {stats.built / stats.seconds:.2f} cases/s" if stats.built and stats.seconds else ""
    print(f"{len(train)} training and {len(val)} validation cases in {folder} ({size / 2**20:.1f} MiB): "
          f"{stats.built} written, {stats.reused} reused{rate}")
    return 0
