"""Run-length encoding of 2D masks as used by the UW-Madison GI Tract Image Segmentation competition.

An RLE string is a space-separated list of ``start length`` pairs. Starts are 1-indexed positions in
the flattened (H, W) slice, flattened ROW-major (C order: position ``h * W + w + 1``). The competition
text says column-major, but the organisers' own loader and the winning solutions read and write
row-major, and the released ``train.csv`` is row-major, so that is what this module does. An empty
string (or the NaN pandas reads for an empty field) is an empty mask.
"""

from __future__ import annotations

import math
import re

import numpy as np

from seg25d.pipeline.errors import InputError

__all__ = ["rle_encode", "rle_decode", "is_empty_rle"]

_INTEGER = re.compile(r"-?[0-9]+")


def is_empty_rle(rle) -> bool:
    """True for an RLE field that means "no mask": ``None``, NaN, or a blank string."""
    if rle is None:
        return True
    if isinstance(rle, float) and math.isnan(rle):
        return True
    return isinstance(rle, str) and not rle.strip()


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2D mask as a row-major, 1-indexed ``start length`` RLE string.

    Args:
        mask: (H, W) array; nonzero means foreground.

    Returns:
        The RLE string, ``""`` for an empty mask.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode expects a 2D (H, W) mask, got shape {mask.shape}")
    flat = np.concatenate(([False], mask.astype(bool).ravel(order="C"), [False]))
    edges = np.flatnonzero(flat[1:] != flat[:-1])  # alternating run starts and run ends (0-based, exclusive)
    if edges.size == 0:
        return ""
    starts, ends = edges[0::2], edges[1::2]
    pairs = np.empty(2 * starts.size, dtype=np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = ends - starts
    return " ".join(map(str, pairs.tolist()))


def rle_decode(rle, shape: tuple[int, int], where: str = "") -> np.ndarray:
    """Decode a row-major, 1-indexed ``start length`` RLE string into a boolean (H, W) mask.

    Args:
        rle: the RLE string; ``""``, ``None`` or NaN decode to an empty mask.
        shape: (H, W) of the slice.
        where: what to name in errors (the slice id, e.g. ``case123_day20_slice_0065 stomach``).

    Returns:
        Boolean array of ``shape``.

    Raises:
        InputError: an odd number of values, a value that is not an integer, a start below 1, a length
            of zero or less, a run past the end of the image, or runs that overlap or are not sorted.
    """
    height, width = (int(s) for s in shape)
    size = height * width
    if is_empty_rle(rle):
        return np.zeros((height, width), dtype=bool)
    if not isinstance(rle, str):
        raise InputError(where or None, f"RLE must be a string, got {type(rle).__name__}")
    tokens = rle.split()
    if len(tokens) % 2:
        raise InputError(where or None, f"RLE has an odd number of values ({len(tokens)}); expected start/length pairs")
    bad = next((t for t in tokens if not _INTEGER.fullmatch(t)), None)
    if bad is not None:
        raise InputError(where or None, f"RLE value {bad!r} is not an integer")
    values = np.array(tokens, dtype=np.int64)
    starts, lengths = values[0::2], values[1::2]
    if (starts < 1).any():
        raise InputError(where or None, f"RLE start {int(starts[starts < 1][0])} is below 1 (starts are 1-indexed)")
    if (lengths < 1).any():
        raise InputError(where or None, f"RLE run length {int(lengths[lengths < 1][0])} is not positive")
    ends = starts + lengths - 1  # last pixel of each run, 1-indexed
    if (ends > size).any():
        i = int(np.flatnonzero(ends > size)[0])
        raise InputError(where or None, f"RLE run {int(starts[i])} {int(lengths[i])} ends at pixel {int(ends[i])}, "
                                        f"past the end of the {height}x{width} image ({size} pixels)")
    if starts.size > 1 and (starts[1:] <= ends[:-1]).any():
        i = int(np.flatnonzero(starts[1:] <= ends[:-1])[0])
        raise InputError(where or None, f"RLE runs overlap or are not sorted: run starting at {int(starts[i + 1])} "
                                        f"follows the run {int(starts[i])}-{int(ends[i])}")
    change = np.zeros(size + 1, dtype=np.int32)
    np.add.at(change, starts - 1, 1)
    np.add.at(change, ends, -1)
    return (np.cumsum(change[:size]) > 0).reshape(height, width)
