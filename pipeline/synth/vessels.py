"""Synthetic MR angiography (time-of-flight look): branching bright vessels in textured tissue.

Each volume holds a few vessel trees that enter through the faces of the box and wander in every
direction as smooth random curves, branching and tapering (radii from ~3.5 down to ~0.7 voxels).
The image shows them with partial-volume edges over textured tissue with darker fluid pockets, a
bright fat shell, bright compact non-vessel blobs (not labelled), a smooth multiplicative bias field and
Rician noise, so no single global threshold separates vessels from the rest. The label is 1 where a
voxel centre lies inside a tube. All lengths are millimetres, so anisotropic spacing is honoured.

Intensities are arbitrary units: tissue ~0.3, vessels ~0.5-1.0 before the bias field and noise.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from seg25d.pipeline.errors import InputError

__all__ = ["vessel_volume", "write_vessel_dataset", "render_tubes", "split_counts", "case_rng"]

_MAX_SEGMENTS = 20000  # safety cap on centreline pieces per volume


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of case ``index``: independent of how many cases are generated."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(index),)))


def render_tubes(
    shape: Sequence[int],
    spacing: Sequence[float],
    start: np.ndarray,
    end: np.ndarray,
    r_start: np.ndarray,
    r_end: np.ndarray,
    reach: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (mm) to a union of tapered tubes, computed only near each piece.

    Each piece ``i`` is the set of points within ``r(t) = r_start + t (r_end - r_start)`` of the segment
    ``start[i] + t (end[i] - start[i])``, ``t`` in [0, 1]. Points are in mm, ``(d, h, w)`` order, voxel
    ``(k, j, i)`` sitting at ``(k, j, i) * spacing``.

    Args:
        shape: grid shape ``(D, H, W)``.
        spacing: voxel size in mm ``(D, H, W)``.
        start, end: ``(N, 3)`` segment end points in mm.
        r_start, r_end: ``(N,)`` radii in mm at each end.
        reach: how far outside the tube surface (mm) distances are computed; farther voxels stay ``+inf``.

    Returns:
        ``(signed_distance, owner)``: float32 ``(D, H, W)`` distance to the nearest tube surface (negative
        inside, ``+inf`` beyond ``reach``) and int32 index of that nearest piece (-1 where none).
    """
    shape = tuple(int(s) for s in shape)
    spacing = np.asarray(spacing, dtype=float)
    start = np.asarray(start, dtype=float).reshape(-1, 3)
    end = np.asarray(end, dtype=float).reshape(-1, 3)
    r_start = np.asarray(r_start, dtype=float).ravel()
    r_end = np.asarray(r_end, dtype=float).ravel()
    distance = np.full(shape, np.inf, dtype=np.float32)
    owner = np.full(shape, -1, dtype=np.int32)
    grid_max = np.asarray(shape)
    lows = np.minimum(start, end) - (np.maximum(r_start, r_end) + reach)[:, None]
    highs = np.maximum(start, end) + (np.maximum(r_start, r_end) + reach)[:, None]
    box_lo = np.maximum(np.floor(lows / spacing).astype(int), 0)
    box_hi = np.minimum(np.ceil(highs / spacing).astype(int) + 1, grid_max)
    axes = [np.arange(n, dtype=np.float32) * np.float32(s) for n, s in zip(shape, spacing)]
    for i in range(len(start)):
        lo, hi = box_lo[i], box_hi[i]
        if np.any(hi <= lo):
            continue
        p0 = start[i]
        axis = end[i] - p0
        length2 = float(axis @ axis)
        rz = (axes[0][lo[0]:hi[0]] - p0[0])[:, None, None]
        ry = (axes[1][lo[1]:hi[1]] - p0[1])[None, :, None]
        rx = (axes[2][lo[2]:hi[2]] - p0[2])[None, None, :]
        if length2 > 1e-12:
            inv = 1.0 / length2
            t = (rz * np.float32(axis[0] * inv) + ry * np.float32(axis[1] * inv)) + rx * np.float32(axis[2] * inv)
            np.clip(t, 0.0, 1.0, out=t)
            dist2 = (rz - t * np.float32(axis[0])) ** 2
            dist2 += (ry - t * np.float32(axis[1])) ** 2
            dist2 += (rx - t * np.float32(axis[2])) ** 2
            signed = np.sqrt(dist2, out=dist2)
            signed -= np.float32(r_start[i]) + t * np.float32(r_end[i] - r_start[i])
        else:
            signed = np.sqrt(rz ** 2 + ry ** 2 + rx ** 2) - np.float32(r_start[i])
        region = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        current = distance[region]
        closer = signed < current
        current[closer] = signed[closer]
        owner[region][closer] = i
    return distance, owner


def partial_volume(signed_distance: np.ndarray, width: float) -> np.ndarray:
    """Fraction of each voxel inside a surface, from the signed distance of its centre (a clipped ramp)."""
    fraction = np.float32(0.5) - signed_distance * np.float32(1.0 / width)
    return np.clip(fraction, 0.0, 1.0, out=fraction)


# --- centrelines -----------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _random_perpendicular(direction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    while True:
        v = rng.normal(size=3)
        v -= (v @ direction) * direction
        norm = np.linalg.norm(v)
        if norm > 1e-6:
            return v / norm


def _tilt(direction: np.ndarray, angle: float, rng: np.random.Generator) -> np.ndarray:
    """``direction`` turned by ``angle`` radians towards a random perpendicular."""
    return _unit(math.cos(angle) * direction + math.sin(angle) * _random_perpendicular(direction, rng))


def _entry(low: np.ndarray, high: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A point on a face of the box (faces weighted by area) and an inward direction."""
    extent = high - low
    areas = np.array([extent[1] * extent[2], extent[0] * extent[2], extent[0] * extent[1]])
    face = rng.choice(6, p=np.repeat(areas, 2) / (2 * areas.sum()))
    axis, side = divmod(int(face), 2)
    point = low + rng.uniform(0.1, 0.9, size=3) * extent
    point[axis] = high[axis] if side else low[axis]
    inward = np.zeros(3)
    inward[axis] = -1.0 if side else 1.0
    return point, _tilt(inward, rng.uniform(0.0, math.radians(65.0)), rng)


def _vessel_segments(shape: Sequence[int], spacing: Sequence[float], rng: np.random.Generator) -> dict:
    """Centreline pieces of a few branching trees, grown until they fill a random 1.2-3 % of the box."""
    spacing = np.asarray(spacing, dtype=float)
    low = -0.5 * spacing
    high = (np.asarray(shape) - 0.5) * spacing
    unit = float(spacing.min())
    step = 1.5 * unit
    r_min = 0.7 * unit
    max_length = 3.0 * float((high - low).max())
    target = rng.uniform(0.012, 0.03) * float(np.prod(high - low))
    p0, p1, r0, r1, bright = [], [], [], [], []
    volume = 0.0
    trees = 0
    while volume < target and trees < 64 and len(p0) < _MAX_SEGMENTS:
        trees += 1
        position, direction = _entry(low, high, rng)
        tortuosity = rng.uniform(1 / 40, 1 / 12) / unit  # rad per mm, std of the turning rate
        branch_every = rng.uniform(6.0, 12.0) * unit
        trunk_taper = rng.uniform(80.0, 160.0) * unit
        branch_taper = rng.uniform(30.0, 70.0) * unit
        stack = [(position, direction, rng.uniform(2.0, 3.5) * unit, 0, rng.uniform(0.85, 1.05))]
        while stack and len(p0) < _MAX_SEGMENTS:
            position, direction, radius, depth, brightness = stack.pop()
            turn = np.zeros(3)
            length = 0.0
            while length < max_length and len(p0) < _MAX_SEGMENTS:
                new_radius = radius * math.exp(-step / (branch_taper if depth else trunk_taper))
                if new_radius < r_min:
                    break
                turn = 0.85 * turn + 0.53 * tortuosity * rng.normal(size=3)
                turn -= (turn @ direction) * direction
                direction = _unit(direction + turn * step)
                new_position = position + step * direction
                brightness = float(np.clip(brightness * math.exp(rng.normal(0.0, 0.02)), 0.7, 1.1))
                p0.append(position)
                p1.append(new_position)
                r0.append(radius)
                r1.append(new_radius)
                bright.append(brightness * (0.7 + 0.3 * min(1.0, new_radius / (2.0 * unit))))
                volume += math.pi * (0.5 * (radius + new_radius)) ** 2 * step
                position, radius = new_position, new_radius
                length += step
                if np.any(position < low - radius) or np.any(position > high + radius):
                    break
                if depth < 6 and rng.random() < step / branch_every:
                    child_radius = radius * rng.uniform(0.5, 0.85)
                    if child_radius >= r_min:
                        child_direction = _tilt(direction, rng.uniform(math.radians(30), math.radians(75)), rng)
                        stack.append((position.copy(), child_direction, child_radius, depth + 1,
                                      brightness * rng.uniform(0.9, 1.02)))
                        radius = max(r_min, radius * rng.uniform(0.8, 0.95))
    return {
        "start": np.array(p0).reshape(-1, 3),
        "end": np.array(p1).reshape(-1, 3),
        "r_start": np.array(r0),
        "r_end": np.array(r1),
        "brightness": np.array(bright),
        "trees": trees,
    }


# --- image -----------------------------------------------------------------------------------------------


def _upsample_axis(field: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Linear interpolation of ``field`` along ``axis`` to ``n_out`` samples over the same extent (cell centres)."""
    n_in = field.shape[axis]
    position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    low = np.minimum(np.floor(position).astype(int), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    view = [1] * field.ndim
    view[axis] = n_out
    weight = (position - low).astype(np.float32).reshape(view)
    lower = np.take(field, low, axis=axis)
    lower += (np.take(field, high, axis=axis) - lower) * weight
    return lower


def smooth_noise(shape: Sequence[int], scale: float | Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """A smooth random field, mean ~0 and std ~1, varying over ~``scale`` voxels (per axis or one for all).

    Coarse white noise is blurred, standardised and upsampled with separable linear interpolation, so the
    cost is a few passes over the output (no BLAS: fast on a busy machine too).
    """
    shape = tuple(int(s) for s in shape)
    scales = np.broadcast_to(np.asarray(scale, dtype=float), (3,))
    coarse_shape = tuple(max(4, int(math.ceil(n / max(c, 1.0))) + 1) for n, c in zip(shape, scales))
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), 1.0)
    field = ((coarse - coarse.mean()) / max(float(coarse.std()), 1e-6)).astype(np.float32)
    for axis in (2, 1, 0):
        field = _upsample_axis(field, shape[axis], axis)
    return field


def _grid(shape: Sequence[int], spacing: np.ndarray) -> list[np.ndarray]:
    """Broadcastable voxel-centre coordinates (mm) along D, H and W."""
    out = []
    for k, (n, s) in enumerate(zip(shape, spacing)):
        view = [1, 1, 1]
        view[k] = int(n)
        out.append((np.arange(n, dtype=np.float32) * np.float32(s)).reshape(view))
    return out


def _ellipsoid_distance(coords: list[np.ndarray], centre, semi_axes, rotation=None) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid surface: (normalised radius - 1) * smallest semi-axis."""
    rel = [c - np.float32(x) for c, x in zip(coords, centre)]
    if rotation is not None:
        rel = [rel[0] * np.float32(rotation[0, k]) + rel[1] * np.float32(rotation[1, k]) + rel[2] * np.float32(rotation[2, k])
               for k in range(3)]
    rho2 = sum((r / np.float32(a)) ** 2 for r, a in zip(rel, semi_axes))
    return (np.sqrt(rho2) - np.float32(1.0)) * np.float32(min(semi_axes))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _add_blobs(image: np.ndarray, spacing: np.ndarray, unit: float, width: float, rng: np.random.Generator) -> None:
    """Bright compact non-vessel structures (fat/eye-like), some filled, some as bright shells."""
    shape = image.shape
    extent = np.asarray(shape) * spacing
    for _ in range(int(rng.integers(3, 7))):
        semi = rng.uniform(2.5, 7.0, size=3) * unit
        centre = rng.uniform(0.1, 0.9, size=3) * extent
        rotation = _random_rotation(rng)
        brightness = rng.uniform(0.55, 1.0)
        shell = rng.random() < 0.4
        reach = semi.max() + 2 * width
        lo = np.maximum(np.floor((centre - reach) / spacing).astype(int), 0)
        hi = np.minimum(np.ceil((centre + reach) / spacing).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        region = tuple(slice(a, b) for a, b in zip(lo, hi))
        coords = [(np.arange(a, b, dtype=np.float32) * np.float32(s)).reshape([-1 if k == j else 1 for j in range(3)])
                  for k, (a, b, s) in enumerate(zip(lo, hi, spacing))]
        signed = _ellipsoid_distance(coords, centre, semi, rotation)
        outer = partial_volume(signed, width)
        patch = image[region]
        if shell:
            inner = partial_volume(signed + np.float32(rng.uniform(1.0, 2.0) * unit), width)
            patch *= 1.0 - outer
            patch += brightness * (outer - inner) + np.float32(rng.uniform(0.1, 0.3)) * inner
        else:
            patch *= 1.0 - outer
            patch += brightness * outer


def _check_geometry(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, int, int], np.ndarray]:
    shape = tuple(int(s) for s in shape)
    spacing_arr = np.asarray(spacing, dtype=float)
    if len(shape) != 3 or min(shape) < 4:
        raise InputError("shape", f"need three sizes of at least 4 voxels, got {shape}")
    if spacing_arr.shape != (3,) or not np.all(np.isfinite(spacing_arr)) or np.any(spacing_arr <= 0):
        raise InputError("spacing", f"need three positive sizes in mm, got {tuple(spacing)}")
    return shape, spacing_arr


def vessel_volume(
    shape: Sequence[int] = (64, 96, 96),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic MR angiography volume and its vessel label.

    Args:
        shape: array shape ``(D, H, W)``.
        spacing: voxel size in mm ``(D, H, W)``; radii are in units of the smallest spacing.
        rng: a numpy Generator or a seed.

    Returns:
        ``(image, label)``: float32 image ``(D, H, W)`` (arbitrary units, tissue ~0.3, vessels up to ~1)
        and uint8 label, 1 where the voxel centre lies inside a vessel.
    """
    shape, spacing_arr = _check_geometry(shape, spacing)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    unit = float(spacing_arr.min())
    width = float(np.prod(spacing_arr) ** (1.0 / 3.0))  # partial-volume ramp width (mm)
    extent = np.asarray(shape) * spacing_arr
    coords = _grid(shape, spacing_arr)

    # Tissue: grey/white-matter-like patches, darker fluid pockets, fine texture.
    patches = smooth_noise(shape, 10.0 * unit / spacing_arr.mean(), rng)
    pockets = smooth_noise(shape, 7.0 * unit / spacing_arr.mean(), rng)
    fine = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.8)
    fine /= max(float(fine.std()), 1e-6)
    image = np.float32(rng.uniform(0.25, 0.32)) + np.float32(0.06) * np.tanh(np.float32(1.5) * patches)
    image += np.float32(0.025) * fine
    image *= 1.0 - np.float32(0.6) * np.clip((pockets - np.float32(1.1)) * np.float32(2.0), 0.0, 1.0)

    # Head-like outline: air in the corners, a bright fat shell just inside the edge.
    head = _ellipsoid_distance(coords, extent / 2 + rng.uniform(-0.05, 0.05, 3) * extent,
                               extent / 2 * rng.uniform([1.5, 1.0, 1.0], [2.5, 1.3, 1.3]))
    inside = partial_volume(head, width)
    fat = inside - partial_volume(head + np.float32(rng.uniform(2.0, 4.0) * unit), width)
    image *= inside
    image += np.float32(rng.uniform(0.3, 0.45)) * fat
    del head, inside, fat, patches, pockets, fine

    _add_blobs(image, spacing_arr, unit, width, rng)

    # Vessels with partial-volume edges.
    segments = _vessel_segments(shape, spacing_arr, rng)
    signed, owner = render_tubes(shape, spacing_arr, segments["start"], segments["end"],
                                 segments["r_start"], segments["r_end"], reach=width)
    label = (signed <= 0).astype(np.uint8)
    fraction = partial_volume(signed, width)
    brightness = np.zeros(shape, dtype=np.float32)
    if len(segments["brightness"]):
        near = owner >= 0
        brightness[near] = segments["brightness"][owner[near]]
    image *= 1.0 - fraction
    image += brightness * fraction
    del signed, owner, fraction, brightness

    # Smooth multiplicative bias (quadratic in normalised coordinates), then Rician noise.
    unit_coords = [c / np.float32(max(e, 1e-6)) * 2 - 1 for c, e in zip(coords, extent)]
    log_bias = sum(np.float32(rng.normal(0, 0.12)) * c for c in unit_coords)
    for a in range(3):
        for b in range(a, 3):
            log_bias = log_bias + np.float32(rng.normal(0, 0.08)) * unit_coords[a] * unit_coords[b]
    log_bias = np.broadcast_to(log_bias, shape)
    image *= np.exp(log_bias - np.float32(log_bias.mean()))
    sigma = np.float32(rng.uniform(0.015, 0.035))
    real = rng.standard_normal(shape, dtype=np.float32)
    real *= sigma
    real += image
    imaginary = rng.standard_normal(shape, dtype=np.float32)
    imaginary *= sigma
    image = np.sqrt(real * real + imaginary * imaginary)
    return image.astype(np.float32, copy=False), label


# --- dataset ---------------------------------------------------------------------------------------------


def split_counts(n: int, split: Sequence[float]) -> tuple[int, int, int]:
    """Cases per (train, val, test) for ``n`` cases: largest remainders, every non-empty fraction >= 1 case
    when ``n >= 3``."""
    fractions = np.asarray(split, dtype=float)
    if fractions.shape != (3,) or np.any(fractions < 0) or not np.all(np.isfinite(fractions)) or fractions.sum() <= 0:
        raise InputError("split", f"need three non-negative fractions (train, val, test), got {tuple(split)}")
    fractions = fractions / fractions.sum()
    exact = fractions * n
    counts = np.floor(exact).astype(int)
    for k in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[k] += 1
    if n >= 3:
        for k in range(3):
            if fractions[k] > 0 and counts[k] == 0:
                donor = int(np.argmax(counts))
                counts[donor] -= 1
                counts[k] += 1
    return int(counts[0]), int(counts[1]), int(counts[2])


def write_vessel_dataset(
    out_dir: str | os.PathLike,
    n: int = 16,
    shape: Sequence[int] = (64, 96, 96),
    seed: int = 0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    split: Sequence[float] = (0.6, 0.15, 0.25),
    progress: bool = True,
) -> Path:
    """Write ``n`` synthetic angiography volumes as a dataset folder and return its manifest path.

    Layout: ``images/vessel_000.nii.gz``, ``labels/vessel_000.nii.gz``, ``manifest.csv`` (cases in order:
    the first ones train, then val, then test) and the label-spec sidecar ``manifest.json``. Case ``i``
    is the same for a given seed whatever ``n`` is.

    Args:
        out_dir: dataset folder (created).
        n: number of volumes.
        shape: ``(D, H, W)`` of each volume.
        seed: base seed.
        spacing: voxel size in mm ``(D, H, W)``.
        split: fractions of cases for train, val and test.
        progress: show a progress bar.

    Returns:
        Path of ``manifest.csv``.
    """
    from seg25d.pipeline.io import synthetic_meta, write_mask, write_volume
    from seg25d.pipeline.manifest import LabelSpec, write_label_spec, write_manifest

    if int(n) < 1:
        raise InputError("n", f"need at least one case, got {n}")
    n = int(n)
    shape, spacing_arr = _check_geometry(shape, spacing)
    spacing = tuple(float(s) for s in spacing_arr)
    counts = split_counts(n, split)
    names = ["train"] * counts[0] + ["val"] * counts[1] + ["test"] * counts[2]
    out_dir = Path(out_dir)
    meta = synthetic_meta(shape, spacing)
    rows = []
    for i in tqdm(range(n), desc="synth vessels", unit="case", disable=not progress):
        image, label = vessel_volume(shape, spacing, case_rng(seed, i))
        case_id = f"vessel_{i:03d}"
        image_path = write_volume(out_dir / "images" / f"{case_id}.nii.gz", image, meta)
        label_path = write_mask(out_dir / "labels" / f"{case_id}.nii.gz", label, meta)
        rows.append({"case_id": case_id, "image": str(image_path), "label": str(label_path), "split": names[i]})
    manifest = out_dir / "manifest.csv"
    write_label_spec(manifest, LabelSpec(("vessel",), (1,), "index"))  # first: the manifest marks completion
    write_manifest(manifest, rows)
    return manifest
