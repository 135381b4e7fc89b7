"""Row-major, 1-indexed start/length RLE of the UW-Madison GI Tract competition."""

from __future__ import annotations

import numpy as np
import pytest

from seg25d.pipeline.errors import InputError
from seg25d.pipeline.kaggle.rle import is_empty_rle, rle_decode, rle_encode

KNOWN_ID = "case123_day20_slice_0065"
KNOWN_RLE = ("28094 3 28358 7 28623 9 28889 9 29155 9 29421 9 29687 9 29953 9 30219 9 30484 10 30750 10 31016 10 "
             "31282 10 31548 10 31814 10 32081 9 32347 8 32614 6")


def reference_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Pixel-by-pixel decoder written straight from the format's definition (independent of the module)."""
    height, width = shape
    out = np.zeros(height * width, dtype=bool)
    values = [int(v) for v in rle.split()]
    for start, length in zip(values[0::2], values[1::2]):
        for pos in range(start - 1, start - 1 + length):
            out[pos] = True
    return out.reshape(height, width)  # row-major: position p is row p // W, column p % W


def reference_encode(mask: np.ndarray) -> str:
    """Pixel-by-pixel encoder: scan row by row, emit (1-indexed start, length) per run."""
    flat = [bool(v) for row in mask for v in row]
    pairs, start = [], None
    for pos, on in enumerate(flat + [False]):
        if on and start is None:
            start = pos
        elif not on and start is not None:
            pairs += [start + 1, pos - start]
            start = None
    return " ".join(map(str, pairs))


def test_known_competition_example():
    mask = rle_decode(KNOWN_RLE, (266, 266), where=f"{KNOWN_ID} stomach")
    assert mask.shape == (266, 266) and mask.dtype == bool
    assert int(mask.sum()) == 156
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max()) == (105, 122)
    assert (cols.min(), cols.max()) == (159, 168)
    # The first run "28094 3" is pixels 28093..28095 (0-based) = row 105, columns 163..165 in row-major order.
    assert divmod(28093, 266) == (105, 163)
    assert mask[105, 163:166].all() and not mask[105, 162] and not mask[105, 166]
    assert np.array_equal(mask, reference_decode(KNOWN_RLE, (266, 266)))
    assert rle_encode(mask) == KNOWN_RLE


def test_row_major_not_column_major():
    # Run of 3 starting at the first pixel of a 2x5 image runs along the first row.
    mask = rle_decode("1 3", (2, 5))
    assert mask[0, :3].all() and mask.sum() == 3
    assert rle_encode(np.array([[1, 0, 0, 0, 0], [1, 0, 0, 0, 0]])) == "1 1 6 1"


@pytest.mark.parametrize("empty", ["", "   ", None, float("nan")])
def test_empty_rle_is_empty_mask(empty):
    assert is_empty_rle(empty)
    mask = rle_decode(empty, (3, 4))
    assert mask.shape == (3, 4) and not mask.any()


def test_empty_mask_encodes_to_empty_string():
    assert rle_encode(np.zeros((7, 5), dtype=bool)) == ""
    assert not is_empty_rle("1 1")


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (4, 6), (17, 23), (64, 48)])
@pytest.mark.parametrize("density", [0.05, 0.5, 0.95])
def test_random_round_trip(shape, density):
    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    for _ in range(5):
        mask = rng.random(shape) < density
        text = rle_encode(mask)
        assert text == reference_encode(mask)
        assert np.array_equal(rle_decode(text, shape), mask)
        assert np.array_equal(reference_decode(text, shape), mask)


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (13, 4)])
def test_edges_and_full_masks(shape):
    h, w = shape
    full = np.ones(shape, dtype=bool)
    assert rle_encode(full) == f"1 {h * w}"
    assert np.array_equal(rle_decode(f"1 {h * w}", shape), full)
    corners = np.zeros(shape, dtype=bool)
    corners[0, 0] = corners[-1, -1] = True
    text = rle_encode(corners)
    assert text == ("1 1" if h * w == 1 else f"1 1 {h * w} 1")
    assert np.array_equal(rle_decode(text, shape), corners)
    # A run ending exactly at the last pixel is valid, one pixel further is not.
    assert rle_decode(f"{h * w} 1", shape)[-1, -1]


def test_adjacent_runs_decode_as_one_region():
    mask = rle_decode("2 2 4 3", (2, 5))
    assert np.array_equal(mask.ravel(), np.array([0, 1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=bool))
    assert rle_encode(mask) == "2 5"


@pytest.mark.parametrize(
    "rle, problem",
    [
        ("1 2 3", "odd number"),
        ("1 2 5", "odd number"),
        ("1 a", "not an integer"),
        ("1.5 2", "not an integer"),
        ("3 2e1", "not an integer"),
        ("1 1_0", "not an integer"),
        ("0 3", "below 1"),
        ("-4 3", "below 1"),
        ("5 0", "not positive"),
        ("5 -2", "not positive"),
        ("19 3", "past the end"),
        ("21 1", "past the end"),
        ("1 5 3 2", "overlap"),
        ("10 2 1 2", "overlap or are not sorted"),
        ("4 2 4 2", "overlap"),
    ],
)
def test_malformed_rle_names_the_id(rle, problem):
    where = "case7_day3_slice_0042 small_bowel"
    with pytest.raises(InputError, match=problem) as info:
        rle_decode(rle, (4, 5), where=where)
    assert str(info.value).startswith(where + ": ")
    assert info.value.where == where


def test_encode_rejects_non_2d():
    with pytest.raises(ValueError):
        rle_encode(np.zeros((2, 2, 2), dtype=bool))
