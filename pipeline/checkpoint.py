"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with ``weights_only=True``.

Every checkpoint carries :data:`VERSION`; :func:`load_checkpoint` brings an older one up to date through
:data:`MIGRATIONS`, the one place that knows how earlier versions differ.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from seg25d.pipeline.atomic import atomic_path
from seg25d.pipeline.errors import InputError, error_line

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "rng_state", "set_rng_state", "migrate", "FORMAT",
           "VERSION", "MIGRATIONS"]

FORMAT = "seg25d-checkpoint-1"  # what marks a seg25d checkpoint
VERSION = 2  # of the payload's layout; older ones are migrated on loading


_REMOVED_V1 = ("infer_directions", "filter_init", "mode", "fine_lift", "head_layers")


def _projection25d_options_v1(options: dict) -> dict:
    """Version 1 -> 2 of projection25d's options.

    Options added after a version-1 checkpoint was written take the values they had then; options removed
    since go: ``infer_directions`` (inference now uses every view), ``filter_init`` (the trained weights
    replace the initial filter), and ``mode``, ``fine_lift`` and ``head_layers`` where they held the one value
    that remains (MIP input, no fine lifting, one head convolution).
    """
    options = dict(options)
    options.setdefault("slabs", 1)
    options.setdefault("sum_input", False)
    options["unet"] = {"norm": "batch", **options.get("unet", {})}
    for key in ("infer_directions", "filter_init"):
        options.pop(key, None)
    for key, kept in (("mode", "mip"), ("fine_lift", False), ("head_layers", 1)):
        value = options.pop(key, kept)
        if value != kept:
            raise ValueError(f"was trained with {key}={value!r}, which this version of projection25d no longer "
                             f"has (only {key}={kept!r})")
    return options


def _from_v1(payload: dict) -> dict:
    model = payload["model_config"]
    if model["name"] != "projection25d":
        return payload
    payload = {**payload, "model_config": {**model, "options": _projection25d_options_v1(model["options"])}}
    config = payload.get("config")
    if config and config.get("model", {}).get("options"):  # what a resumed run compares its config with
        options = {k: v for k, v in config["model"]["options"].items() if k not in _REMOVED_V1}
        payload["config"] = {**config, "model": {**config["model"], "options": options}}
    return payload


#: version -> the function that turns a payload of that version into one of the next
MIGRATIONS = {1: _from_v1}


def migrate(payload: dict) -> dict:
    """``payload`` brought to :data:`VERSION` (ValueError for one this version cannot read)."""
    version = int(payload.get("version", 1))
    if version > VERSION:
        raise ValueError(f"written by a newer seg25d (checkpoint version {version}, this one reads up to {VERSION})")
    while version < VERSION:
        payload = MIGRATIONS[version](payload)
        version += 1
    return {**payload, "version": VERSION}


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Atomically write ``payload`` (tagged with the checkpoint format and version) to ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint as untrusted input (``weights_only=True``) and migrate it to :data:`VERSION`; InputError
    names the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        if _cut_short(path):
            raise InputError(path, "not a seg25d checkpoint (empty/truncated file)") from None
        raise InputError(path, f"not a readable checkpoint ({type(err).__name__}: {error_line(err, last=False)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(path, f"not a seg25d checkpoint (expected format {FORMAT})")
    return _migrated(path, payload)


def _migrated(path, payload: dict) -> dict:
    try:
        return migrate(payload)
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"cannot read this checkpoint: {err}") from None


def _cut_short(path: Path) -> bool:
    """True for an empty file, or a zip archive (torch's format) whose end record is missing."""
    with open(path, "rb") as handle:
        head = handle.read(4)
        handle.seek(max(0, path.stat().st_size - 65_557))  # the end record: 22 bytes + a comment of up to 64 KiB
        return not head or (head == b"PK\x03\x04" and b"PK\x05\x06" not in handle.read())


def load_model(path: str | os.PathLike, payload: dict | None = None):
    """Rebuild the network of a checkpoint (``payload``: one already read) from its stored constructor config and
    load its weights (eval mode)."""
    from seg25d.models import build

    payload = load_checkpoint(path) if payload is None else _migrated(path, payload)
    config = payload["model_config"]
    try:
        model = build(config["name"], config["in_channels"], config["out_channels"], **config["options"])
        model.load_state_dict(payload["model_state"])
    except (ValueError, RuntimeError, KeyError) as err:
        raise InputError(path, f"cannot rebuild the model ({err})") from None
    return model.eval()


def rng_state() -> dict:
    """Python, numpy and torch RNG states (with every GPU's where CUDA is initialised) as checkpoint-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`; the GPU states only where the machine has as many GPUs (a run resumed on
    another device keeps its fresh GPU states: the trainer reseeds every step anyway)."""
    random.setstate(_tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
