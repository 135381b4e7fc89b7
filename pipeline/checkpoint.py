"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with ``weights_only=True``."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from seg25d.pipeline.atomic import atomic_path
from seg25d.pipeline.errors import InputError, error_line

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "rng_state", "set_rng_state", "FORMAT"]

FORMAT = "seg25d-checkpoint-1"


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Atomically write ``payload`` (tagged with the checkpoint format) to ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint as untrusted input (``weights_only=True``); InputError names the file on failure."""
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
    return payload


def _cut_short(path: Path) -> bool:
    """True for an empty file, or a zip archive (torch's format) whose end record is missing."""
    with open(path, "rb") as handle:
        head = handle.read(4)
        handle.seek(max(0, path.stat().st_size - 65_557))  # the end record: 22 bytes + a comment of up to 64 KiB
        return not head or (head == b"PK\x03\x04" and b"PK\x05\x06" not in handle.read())


def load_model(path: str | os.PathLike, payload: dict | None = None):
    """Rebuild the network of a checkpoint from its stored constructor config and load its weights (eval mode)."""
    from seg25d.models import build

    payload = payload or load_checkpoint(path)
    config = payload["model_config"]
    options = dict(config["options"])
    if config["name"] == "projection25d":
        # written before these options existed: the values they had then, not today's preset
        options.setdefault("slabs", 1)
        options.setdefault("infer_directions", options.get("directions"))
        options.setdefault("sum_input", False)
        options["unet"] = {"norm": "batch", **options.get("unet", {})}
    try:
        model = build(config["name"], config["in_channels"], config["out_channels"], **options)
        model.load_state_dict(payload["model_state"])
    except (ValueError, RuntimeError, KeyError) as err:
        raise InputError(path, f"cannot rebuild the model ({err})") from None
    return model.eval()


def rng_state() -> dict:
    """Python, numpy and torch RNG states as checkpoint-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
