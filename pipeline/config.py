"""Run configuration: defaults, named presets, TOML files and ``--set key=value`` overrides.

A configuration is a nested dict with the sections below; ``docs/configuration.md`` documents every key.
Resolution order: :data:`DEFAULTS` <- preset or TOML file <- ``--set`` overrides. Unknown keys are errors
that list the valid ones, so typos never pass silently, and every value must have its default's type
(a number where the default is one, a list of integers for ``data.patch_size``...), checked before any data
is read.
"""

from __future__ import annotations

import copy
import difflib
import os
import sys
from pathlib import Path
from typing import Any

from seg25d.pipeline.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["DEFAULTS", "load_config", "parse_override", "apply_override", "list_presets", "PRESET_DIR"]

PRESET_DIR = Path(__file__).with_name("presets")

DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {
        "manifest": "",             # manifest CSV (case_id,image,label,split[,group]); its .json sidecar names classes
        "spacing": "auto",          # target voxel size (mm, D H W); "auto": the plan's; [] keeps each volume's own
        "normalize": "auto",        # "auto" (the plan's, per modality) | case_zscore | zscore | percentile | ct | none
        "percentiles": [0.5, 99.5],  # clipping bounds for normalize = "percentile"
        "patch_size": [],           # 3D patch (D H W) for the 3D CNNs (unet3d, monai_unet); [] = whole volumes; "auto": the plan's
        "foreground_fraction": 0.33,  # share of patches / slices drawn to contain foreground
        "val_fraction": 0.0,        # when the manifest has no val split: share of train cases held out (by group)
        "folds": 0,                 # cross-validation folds (GroupKFold by group); 0: use the manifest's splits
        "fold": 0,                  # which fold is validation when folds > 0
        "exclude": [],              # case ids (or groups) to leave out
        "resample_labels": False,   # resample a label whose grid differs from its image's onto the image (nearest);
                                    # false: such a label is an error, as in `seg25d manifest check`
        "cache": "",                # preprocessed cases ("": $SEG25D_CACHE, ~/.cache/seg25d; "off": in memory)
    },
    "augment": {
        "enabled": True,
        "flip_axes": [1, 2],        # array axes flipped at random (0 = D, 1 = H, 2 = W)
        "rotate_degrees": 0.0,      # random in-plane (H, W) rotation range, +-degrees
        "scale_intensity": 0.1,     # multiply intensities by U(1 - s, 1 + s)
        "gamma": 0.0,               # gamma exp(U(-g, g)) on min-max rescaled intensities
        "shift": 0.0,               # in-plane translation by U(-s, s) of H and of W (pipeline/augment.py)
        "zoom": 0.0,                # in-plane scaling by 1 + U(-z, z)
        "grid_distortion": 0.0,     # grid cells resized by 1 + U(-g, g) (albumentations' GridDistortion)
        "grid_steps": 5,            # grid cells per axis for grid_distortion
        "brightness": 0.0,          # add U(-b, b) standard deviations
        "contrast": 0.0,            # scale deviations from the mean by 1 + U(-c, c)
    },
    "model": {
        "name": "projection25d",    # any name of seg25d.models.list_models()
        "options": {},              # options passed to seg25d.models.build
    },
    "loss": {
        "kind": "bce_dice",         # dice | bce_dice | ce_dice
        "dice_weight": 1.0,
        "ce_weight": 1.0,           # weight of the BCE or CE term
        "aux_weight": 0.5,          # projection25d: weight of the 2D loss on the views (if the model enables it)
    },
    "train": {
        "seed": 0,
        "max_steps": 500,
        "max_minutes": 0.0,         # wall-clock limit (0: none); stops early, after a checkpoint
        "batch_size": 1,            # volumes (or 3D patches) per step for volume models
        "slices_per_step": 16,      # slices (or slice stacks) per step for 2D models
        "lr": 0.001,
        "weight_decay": 0.0001,
        "scheduler": "cosine",      # cosine | constant
        "warmup_steps": 10,
        "ema": 0.0,                 # decay of an exponential moving average of the weights that predicts (0: off)
        "checkpoint_every": 50,     # steps between last.pt writes
        "val_every": 50,            # steps between validations (best.pt)
        "schedule": "path1_then_path2",  # projection25d: path1 | path1_then_path2 | alternate
        "path2_fraction": 0.2,      # share of the steps (and of max_minutes) spent in path 2 at the end
        "alternate_every": 5,       # with schedule = "alternate": every n-th step is a path-2 step
        "device": "auto",           # auto | cpu | cuda | cuda:N (auto: the GPU when CUDA is available, else the CPU)
        "precision": "auto",        # auto | fp32 | bf16 | fp16 of the forward pass (auto: bf16 on GPUs and CPUs built
                                    # for it, fp16 with a gradient scaler on older GPUs, fp32 on other CPUs)
        "deterministic": False,     # deterministic algorithms: bit-identical CUDA reruns, slower steps
        "threads": 0,               # torch threads (0: torch's default)
        "workers": "auto",          # batch-making processes (auto: min(4, cores per rank - 1); 0: in the trainer)
        "val_max_cases": 0,         # validate on at most this many cases (0: all)
        "progress": True,           # progress bar
    },
}


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise InputError(path, f"cannot read TOML config ({err})") from None


def _merge(base: dict, update: dict, where: str, prefix: str = "") -> dict:
    for key, value in update.items():
        name = f"{prefix}{key}"
        if key not in base:
            close = difflib.get_close_matches(key, base, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise InputError(where, f"unknown config key {name!r}{hint}; valid: {', '.join(prefix + k for k in base)}")
        if isinstance(base[key], dict) and key != "options":
            if not isinstance(value, dict):
                raise InputError(where, f"{name} must be a table")
            _merge(base[key], value, where, f"{name}.")
        else:
            base[key] = value
    return base


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.max_steps=200"`` -> ``(["train", "max_steps"], 200)``; values are TOML literals, else strings."""
    if "=" not in text:
        raise InputError("--set", f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_override(config: dict, text: str) -> dict:
    keys, value = parse_override(text)
    update: dict = {}
    node = update
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    if keys[0] == "model" and len(keys) > 2 and keys[1] == "options":  # model.options.x.y = v
        target = config["model"]["options"]
        for k in keys[2:-1]:
            target = target.setdefault(k, {})
        target[keys[-1]] = value
        return config
    return _merge(config, update, "--set")


def load_config(name_or_file: str | os.PathLike | None = None, overrides: list[str] | tuple = ()) -> dict:
    """Resolve a configuration from a preset name or TOML file plus ``key=value`` overrides.

    A relative ``data.manifest`` in a TOML file is relative to that file's folder. Overriding ``model.name``
    drops the options that were meant for the other model; ``model.options`` overrides then apply on top.
    """
    config = copy.deepcopy(DEFAULTS)
    if name_or_file:
        path = Path(name_or_file)
        if path.suffix == ".toml" or path.exists():
            if not path.is_file():
                raise InputError(path, "config file not found")
            source = path
        elif str(name_or_file) in list_presets():
            source = PRESET_DIR / f"{name_or_file}.toml"
        else:
            raise InputError(None, f"unknown config {str(name_or_file)!r}: not a file and not a preset "
                                   f"({', '.join(list_presets())})")
        _merge(config, _read_toml(source), str(source))
        manifest = config["data"]["manifest"]
        if manifest and source.parent != PRESET_DIR and not Path(manifest).is_absolute():
            config["data"]["manifest"] = str((source.parent / manifest).resolve())
    name = config["model"]["name"]
    options = [text for text in overrides if parse_override(text)[0][:2] == ["model", "options"]]
    for text in overrides:
        if text not in options:
            apply_override(config, text)
    if config["model"]["name"] != name:  # the preset's options were meant for its own model
        config["model"]["options"] = {}
    for text in options:
        apply_override(config, text)
    _check_types(config, DEFAULTS)
    _check_counts(config)
    return config


# item types of the lists whose default is empty or a word
_ITEMS = {"data.spacing": float, "data.patch_size": int, "data.exclude": str, "data.normalize": str}
# keys that take a word ("auto") or a value of another type
_ALSO = {"train.workers": (int,), "data.spacing": (list,), "data.normalize": (list,), "data.patch_size": (str,)}
# keys whose only string values are these words
_WORDS = {"data.spacing": ("auto",), "data.patch_size": ("auto",), "train.workers": ("auto",)}
_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a table"}
_ITEM_NAMES = {int: "integers", float: "numbers", str: "strings"}


def _fits(value, kind: type) -> bool:
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _list_item(name: str, default) -> type:
    kind = _ITEMS.get(name) or type(default[0])
    return float if kind is int and any(isinstance(v, float) for v in default) else kind


def _check_types(config: dict, defaults: dict, prefix: str = "") -> None:
    """Every value has its default's type (or one :data:`_ALSO` allows): bool, integer, number (integer or
    float), string, table or list of these; the first mismatch raises InputError ``<key>: expected a number,
    got 'abc'``."""
    for key, default in defaults.items():
        name, value = f"{prefix}{key}", config[key]
        if isinstance(default, dict) and key != "options":
            _check_types(value, default, f"{name}.")
            continue
        kinds = (type(default), *_ALSO.get(name, ()))
        if isinstance(value, list) and list in kinds:
            item = _list_item(name, default)
            if all(_fits(v, item) for v in value):
                continue
        elif any(_fits(value, kind) for kind in kinds if kind is not list) and not (
                isinstance(value, str) and name in _WORDS and value not in _WORDS[name]):
            continue
        expected = " or ".join(f"a list of {_ITEM_NAMES[_list_item(name, default)]}" if kind is list
                               else " or ".join(f'"{w}"' for w in _WORDS[name]) if kind is str and name in _WORDS
                               else _TYPE_NAMES[kind] for kind in kinds)
        raise InputError(name, f"expected {expected}, got {value!r}")


_POSITIVE = ("max_steps", "batch_size", "slices_per_step", "checkpoint_every", "val_every")


def _check_counts(config: dict) -> None:
    """Step counts and sizes must be positive integers (a zero interval would never fire, or divide by zero)."""
    for key in _POSITIVE:
        value = config["train"][key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"train.{key}", f"must be a positive integer, got {value!r}")
