"""Synthetic abdominal MR case-days in the UW-Madison GI Tract (Kaggle) layout.

Writes ``OUT/train/case{N}/case{N}_day{M}/scans/slice_{NNNN}_{W}_{H}_{PW}_{PH}.png`` (16-bit grayscale,
width first in the name, ``H`` PNG rows) and ``OUT/train.csv`` (``id,class,segmentation``; three rows per
slice: large_bowel, small_bowel, stomach; row-major 1-indexed start/length RLE, empty for no mask).

Each case has its own anatomy: a body ellipse with fat, muscle, spine, liver, spleen and kidneys; a large
bowel framing the abdomen (cecum, ascending, transverse, descending, sigmoid colon, rectum); small-bowel
loops tangled in the middle; a J-shaped stomach high on the patient's left (image right). Each day of a
case shifts and smoothly deforms that anatomy, changes the stomach filling and the bowel calibres and
contents. Organs occupy the middle slices; slices near the top and bottom hold none. Image rows run
anterior to posterior; slice numbers run inferior (1) to superior.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.interpolate import CubicSpline
from tqdm import tqdm

from seg25d.pipeline.atomic import atomic_path, write_text
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.synth.vessels import partial_volume, render_tubes, smooth_noise
from seg25d.pipeline.kaggle.layout import CLASSES, SLICE_THICKNESS_MM
from seg25d.pipeline.kaggle.rle import rle_encode

__all__ = ["write_gi_dataset", "GI_SIZES", "GI_CLASSES", "GI_SLICE_THICKNESS"]

GI_CLASSES: tuple[str, ...] = CLASSES
# (width, height, pixel width mm, pixel height mm) of the competition's scans.
GI_SIZES: tuple[tuple[int, int, float, float], ...] = (
    (266, 266, 1.50, 1.50),
    (234, 234, 1.50, 1.50),
    (360, 310, 1.50, 1.50),
    (276, 276, 1.63, 1.63),
)
GI_SLICE_THICKNESS = SLICE_THICKNESS_MM

# Large bowel centreline from the rectum to the cecum: (u, v, t, radius factor) with u image left (-1,
# patient's right) to image right (+1), v anterior (-1) to posterior (+1), both relative to the body
# ellipse, t the fraction of the organ height (0 bottom).
_LARGE_BOWEL = (
    (0.00, 0.55, 0.00, 0.85), (0.05, 0.25, 0.08, 0.75), (0.35, 0.05, 0.14, 0.70), (0.55, 0.20, 0.25, 0.75),
    (0.66, 0.32, 0.45, 0.80), (0.68, 0.25, 0.62, 0.85), (0.66, 0.05, 0.76, 0.90), (0.35, -0.55, 0.56, 1.00),
    (0.00, -0.65, 0.46, 1.00), (-0.30, -0.55, 0.52, 1.00), (-0.60, -0.15, 0.64, 1.05), (-0.66, 0.15, 0.50, 1.10),
    (-0.62, 0.20, 0.32, 1.15), (-0.50, 0.10, 0.20, 1.30),
)
# Stomach: fundus (top) to pylorus.
_STOMACH = (
    (0.40, 0.12, 1.00, 0.80), (0.40, -0.08, 0.94, 1.00), (0.32, -0.28, 0.87, 1.00), (0.20, -0.40, 0.80, 0.85),
    (0.02, -0.42, 0.77, 0.60), (-0.15, -0.30, 0.80, 0.35),
)
# Small-bowel loops fill this ellipsoid (u, v, t centre; u, v, t semi-axes).
_SMALL_BOWEL_REGION = ((0.0, -0.08, 0.35), (0.5, 0.45, 0.36))


@dataclass
class _Tube:
    points: np.ndarray      # (N, 3) centreline in mm, (z, y, x)
    radii: np.ndarray       # (N,) mm
    shade: np.ndarray       # (N,) content brightness along the tube


@dataclass
class _Case:
    width: int
    height: int
    pixel_w: float
    pixel_h: float
    slices: int
    z_step: float           # slice spacing (mm) the anatomy is drawn with; see _new_case
    scale: float            # organ size relative to a typical adult abdomen
    centre: np.ndarray      # body centre (y, x) mm
    semi: np.ndarray        # body semi-axes: left-right, anterior, posterior (mm)
    organ_z: tuple[float, float]
    tubes: dict
    gain: float
    fat: float
    tissue: float
    stomach_fluid: float    # probability that the stomach holds bright fluid on a day


# --- geometry ----------------------------------------------------------------------------------------------


def _to_mm(case_like: dict, u, v, t) -> np.ndarray:
    cy, cx = case_like["centre"]
    lr, ant, post = case_like["semi"]
    z0, z1 = case_like["organ_z"]
    u, v, t = np.asarray(u, float), np.asarray(v, float), np.asarray(t, float)
    y = cy + v * np.where(v < 0, ant, post)
    return np.stack([z0 + t * (z1 - z0), y, cx + u * lr], axis=-1)


def _spline(points: np.ndarray, radii: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smooth curve through ``points`` sampled every ~``step`` mm, radii interpolated, arc length."""
    chord = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    keep = np.concatenate([[True], np.diff(chord) > 1e-6])
    chord, points, radii = chord[keep], points[keep], radii[keep]
    samples = np.linspace(0.0, chord[-1], max(2, int(math.ceil(chord[-1] / step)) + 1))
    return CubicSpline(chord, points, axis=0)(samples), np.interp(samples, chord, radii), samples


def _small_bowel_walk(centre: np.ndarray, semi: np.ndarray, radius: float, step: float,
                      rng: np.random.Generator) -> np.ndarray:
    """A tangled, smoothly turning path kept inside an ellipsoid (mm) whose loops fill ~60 % of it."""
    volume = 4.0 / 3.0 * math.pi * float(np.prod(semi))
    n_steps = int(np.clip(0.6 * volume / (math.pi * radius ** 2) / step, 12, 1500))
    position = centre + rng.uniform(-0.5, 0.5, 3) * semi
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    turn = np.zeros(3)
    path = [position]
    for _ in range(n_steps):
        turn = 0.8 * turn + 0.6 * rng.normal(size=3) / (4.0 * radius)
        turn -= (turn @ direction) * direction
        q = (position - centre) / semi
        rho = float(np.linalg.norm(q))
        if rho > 0.6:
            inward = -q / semi
            direction = direction + 2.5 * (rho - 0.6) * inward / np.linalg.norm(inward)
        direction = direction + turn * step
        direction /= np.linalg.norm(direction)
        position = position + step * direction
        path.append(position)
    return np.array(path)


def _new_case(rng: np.random.Generator, sizes: Sequence[tuple], slices: tuple[int, int]) -> _Case:
    width, height, pixel_w, pixel_h = sizes[int(rng.integers(len(sizes)))]
    n_slices = int(rng.integers(slices[0], slices[1] + 1))
    fov = np.array([height * pixel_h, width * pixel_w])
    lr = min(rng.uniform(150.0, 185.0), 0.45 * fov[1])
    ap = min(rng.uniform(105.0, 135.0), 0.42 * fov[0])
    semi = np.array([lr, ap * rng.uniform(0.95, 1.05), ap * rng.uniform(0.8, 0.9)])
    centre = fov / 2 + rng.uniform(-0.03, 0.03, 2) * fov + np.array([0.03 * fov[0], 0.0])
    # The competition's 144 slices span ~430 mm; with fewer slices the anatomy is drawn as if they were
    # spread over at least 330 mm (squashed uniformly along the slice axis) so organs keep their proportions.
    z_step = GI_SLICE_THICKNESS * max(1.0, 330.0 / (n_slices * GI_SLICE_THICKNESS))
    height_mm = n_slices * z_step
    scale = lr / 170.0
    # Organs (with their radii and the day-to-day motion) stay clear of the top and bottom slices.
    bottom = rng.uniform(0.15, 0.25) * height_mm + 22.0 * scale + 8.0
    top = height_mm - rng.uniform(0.12, 0.2) * height_mm - 32.0 * scale - 8.0
    if top - bottom < 0.25 * height_mm:
        middle = 0.5 * (top + bottom)
        bottom, top = middle - 0.125 * height_mm, middle + 0.125 * height_mm
    frame = {"centre": centre, "semi": semi, "organ_z": (bottom, top)}

    tubes = {}
    table = np.array(_LARGE_BOWEL)
    jitter = rng.normal(0.0, 0.04, size=(len(table), 3))
    points = _to_mm(frame, *(table[:, :3] + jitter).T)
    radius = rng.uniform(17.0, 22.0) * scale
    line, radii, arc = _spline(points, table[:, 3] * radius, 2.5 * scale)
    haustra = 1.0 + 0.12 * np.sin(2 * math.pi * arc / (rng.uniform(20.0, 30.0) * scale) + rng.uniform(0, 2 * math.pi))
    shade = np.clip(0.35 + 0.15 * smooth_noise((1, 1, len(line)), 8.0, rng).ravel(), 0.1, 0.7)
    tubes["large_bowel"] = _Tube(line, radii * haustra, shade)

    centre_t, semi_t = (np.array(a) for a in _SMALL_BOWEL_REGION)
    region_centre = _to_mm(frame, *centre_t)
    region_semi = np.abs(_to_mm(frame, *(centre_t + semi_t)) - region_centre)
    radius = rng.uniform(8.0, 11.0) * scale
    walk = _small_bowel_walk(region_centre, region_semi, radius, 0.8 * radius, rng)
    line, radii, arc = _spline(walk, np.full(len(walk), radius), 0.4 * radius)
    radii = radii * (1.0 + 0.15 * smooth_noise((1, 1, len(line)), 10.0, rng).ravel().clip(-2, 2))
    shade = np.clip(0.72 + 0.18 * smooth_noise((1, 1, len(line)), 12.0, rng).ravel(), 0.3, 1.0)
    tubes["small_bowel"] = _Tube(line, radii, shade)

    table = np.array(_STOMACH)
    jitter = rng.normal(0.0, 0.03, size=(len(table), 3))
    points = _to_mm(frame, *(table[:, :3] + jitter).T)
    radius = rng.uniform(26.0, 34.0) * scale
    line, radii, _ = _spline(points, table[:, 3] * radius, 2.5 * scale)
    tubes["stomach"] = _Tube(line, radii, np.ones(len(line)))

    return _Case(
        width=int(width), height=int(height), pixel_w=float(pixel_w), pixel_h=float(pixel_h), slices=n_slices,
        z_step=z_step, scale=scale, centre=centre, semi=semi, organ_z=(bottom, top), tubes=tubes,
        gain=rng.uniform(2000.0, 9000.0), fat=rng.uniform(0.75, 0.95), tissue=rng.uniform(0.3, 0.4),
        stomach_fluid=rng.uniform(0.2, 0.8),
    )


def _displacement(points: np.ndarray, amplitude: float, wavelength: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random displacement (sum of three plane waves) evaluated at ``points`` (mm)."""
    out = np.zeros_like(points)
    for _ in range(3):
        k = rng.normal(size=3)
        k *= 2 * math.pi / (wavelength * np.linalg.norm(k))
        out += rng.normal(0.0, amplitude / math.sqrt(3), size=3) * np.sin(points @ k + rng.uniform(0, 2 * math.pi))[:, None]
    return out


# --- image ---------------------------------------------------------------------------------------------------


def _grid(case: _Case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = (np.arange(case.slices, dtype=np.float32) * np.float32(case.z_step))[:, None, None]
    y = (np.arange(case.height, dtype=np.float32) * np.float32(case.pixel_h))[None, :, None]
    x = (np.arange(case.width, dtype=np.float32) * np.float32(case.pixel_w))[None, None, :]
    return z, y, x


def _paint_ellipsoid(image: np.ndarray, spacing: np.ndarray, centre: np.ndarray, semi: np.ndarray,
                     value: float, width: float) -> None:
    """Blend ``value`` into ``image`` inside an axis-aligned ellipsoid (mm), with partial-volume edges."""
    lo = np.maximum(np.floor((centre - semi - 2 * width) / spacing).astype(int), 0)
    hi = np.minimum(np.ceil((centre + semi + 2 * width) / spacing).astype(int) + 1, image.shape)
    if np.any(hi <= lo):
        return
    axes = [((np.arange(a, b, dtype=np.float32) * np.float32(s) - np.float32(c)) / np.float32(r))
            .reshape([-1 if k == j else 1 for j in range(3)])
            for k, (a, b, s, c, r) in enumerate(zip(lo, hi, spacing, centre, semi))]
    signed = (np.sqrt(axes[0] ** 2 + axes[1] ** 2 + axes[2] ** 2) - np.float32(1.0)) * np.float32(semi.min())
    fraction = partial_volume(signed, width)
    patch = image[tuple(slice(a, b) for a, b in zip(lo, hi))]
    patch *= 1.0 - fraction
    patch += np.float32(value) * fraction


def _render_case_day(case: _Case, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render one day of a case: uint16 image ``(slices, H, W)`` and a bool mask per class."""
    shape = (case.slices, case.height, case.width)
    spacing = np.array([case.z_step, case.pixel_h, case.pixel_w])
    width = float(min(case.pixel_h, case.pixel_w))
    z, y, x = _grid(case)
    s = case.scale

    # Day-specific pose: the patient lies a little differently, the organs move and deform inside.
    body_shift = np.array([0.0, *rng.normal(0.0, 4.0, 2)])
    organ_shift = body_shift + np.array([rng.uniform(-6.0, 6.0), *rng.normal(0.0, 4.0 * s, 2)])
    body_centre = case.centre + body_shift[1:]

    # Body: ellipse per slice (flatter at the back), subcutaneous fat, muscle wall, visceral tissue.
    lr = case.semi[0] * (1.0 + 0.04 * np.sin(2 * math.pi * z / 400.0 + 1.0))
    ap = np.where(y < body_centre[0], case.semi[1], case.semi[2]).astype(np.float32)
    rho = np.sqrt(((x - np.float32(body_centre[1])) / lr.astype(np.float32)) ** 2
                  + ((y - np.float32(body_centre[0])) / ap) ** 2)
    depth = (np.float32(1.0) - rho) * np.float32(case.semi[2])      # approximate depth below the skin (mm)
    del rho
    body = partial_volume(-depth, width)
    fat_depth = np.float32(rng.uniform(12.0, 28.0) * s) * (
        1 + np.float32(0.3) * smooth_noise(shape, (40.0 / case.z_step, 40.0 / case.pixel_h, 40.0 / case.pixel_w), rng))
    fat = body - partial_volume(fat_depth - depth, width)
    muscle = partial_volume(fat_depth - depth, width) - partial_volume(fat_depth + np.float32(9.0 * s) - depth, width)
    del depth
    texture = smooth_noise(shape, (10.0 / case.z_step, 25.0 / case.pixel_h, 25.0 / case.pixel_w), rng)
    texture += np.float32(0.6) * smooth_noise(shape, (4.0 / case.z_step, 6.0 / case.pixel_h, 6.0 / case.pixel_w), rng)
    image = np.float32(case.tissue) + np.float32(0.05) * texture
    # Mesenteric fat: bright patches between the viscera.
    fatty = smooth_noise(shape, (6.0 / case.z_step, 6.0 / case.pixel_h, 6.0 / case.pixel_w), rng)
    fatty -= np.float32(rng.uniform(0.3, 0.9))
    fatty *= np.float32(2.0)
    np.clip(fatty, 0.0, 1.0, out=fatty)
    image += (np.float32(0.7 * case.fat) - image) * fatty
    del fatty

    # Solid organs and the spine (axis-aligned ellipsoids in mm) inside the abdominal wall.
    frame = {"centre": case.centre, "semi": case.semi, "organ_z": case.organ_z}
    height_mm = case.slices * case.z_step

    def ellipsoid(u, v, t, semi_uvt, value, z_centre=None):
        centre = _to_mm(frame, u, v, t) + organ_shift
        if z_centre is not None:
            centre[0] = z_centre
        semi = np.array([semi_uvt[2] * height_mm, semi_uvt[1] * case.semi[1], semi_uvt[0] * case.semi[0]])
        _paint_ellipsoid(image, spacing, centre, semi, value * rng.uniform(0.9, 1.1), width)

    ellipsoid(-0.45, -0.05, 1.0, (0.45, 0.65, 0.35), 0.27, z_centre=case.organ_z[1] + 0.1 * height_mm)  # liver
    ellipsoid(0.62, 0.35, 1.0, (0.2, 0.3, 0.15), 0.42, z_centre=case.organ_z[1])                       # spleen
    for side in (-1, 1):                                                                              # kidneys
        ellipsoid(0.42 * side, 0.5, 0.62, (0.13, 0.22, 0.15), 0.5)
    spine_y = body_centre[0] + 0.4 * case.semi[2]
    for dy, semi, value in ((0.0, 17.0, 0.12), (0.0, 14.0, 0.45), (24.0, 8.0, 0.9)):                   # vertebra, canal
        centre = np.array([height_mm / 2, spine_y + dy * s, body_centre[1]])
        _paint_ellipsoid(image, spacing, centre, np.array([10 * height_mm, semi * s, semi * s]), value, width)

    inner_body = body - fat - muscle
    image *= inner_body
    image += (np.float32(case.fat) + np.float32(0.03) * texture) * fat + np.float32(0.2) * muscle
    del fat, muscle

    # Hollow organs: walls and contents blended over the tissue; masks where the voxel centre is inside.
    masks = {}
    wave = rng.uniform(60.0, 120.0) * s
    for name in ("large_bowel", "small_bowel", "stomach"):
        tube = case.tubes[name]
        points = tube.points + organ_shift + _displacement(tube.points, 6.0 * s, 2.5 * wave, rng)
        radii = tube.radii.copy()
        if name == "small_bowel":
            points = points + _displacement(tube.points, 4.0 * s, wave / 2, rng)
            radii *= rng.uniform(0.85, 1.15) * (1 + 0.12 * np.sin(np.arange(len(radii)) / rng.uniform(3, 8)
                                                                    + rng.uniform(0, 2 * math.pi)))
        elif name == "stomach":
            radii *= rng.uniform(0.8, 1.2)
        else:
            radii *= rng.uniform(0.9, 1.1)
        wall = max(2.5 * s, 0.8 * width)
        # Work inside the organ's bounding box only.
        reach = 2 * width
        lo = np.maximum(np.floor((points.min(0) - radii.max() - reach) / spacing).astype(int), 0)
        hi = np.minimum(np.ceil((points.max(0) + radii.max() + reach) / spacing).astype(int) + 1, shape)
        masks[name] = np.zeros(shape, dtype=bool)
        if np.any(hi <= lo):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        origin = lo * spacing
        signed, owner = render_tubes(hi - lo, spacing, points[:-1] - origin, points[1:] - origin,
                                     radii[:-1], radii[1:], reach=reach)
        body_box = inner_body[box]
        masks[name][box] = (signed <= 0) & (body_box > 0.5)
        outer = partial_volume(signed, width)
        outer *= body_box
        inner = partial_volume(signed + np.float32(wall), width)
        inner *= body_box
        content = np.zeros(signed.shape, dtype=np.float32)
        near = owner >= 0
        texture_near = texture[box][near]
        shade = tube.shade[np.clip(owner[near], 0, len(tube.shade) - 1)].astype(np.float32)
        if name == "stomach":
            if rng.random() < case.stomach_fluid:      # fluid, with a gas cap at the front half the time
                shade *= np.float32(rng.uniform(0.85, 1.1))
                if rng.random() < 0.5:
                    level = np.float32(np.percentile(points[:, 1], 30))
                    gas = np.broadcast_to(y[:, box[1], :] < level, signed.shape)[near]
                    shade[gas] = 0.05
            else:                                      # food: mid grey, mottled
                shade *= np.float32(rng.uniform(0.35, 0.55))
            shade *= 1 + np.float32(0.15) * texture_near
        elif name == "large_bowel":
            shade *= np.clip(1 + np.float32(0.6) * texture_near, 0.1, 2.0)
        else:
            shade *= 1 + np.float32(0.1) * texture_near
        content[near] = shade
        patch = image[box]
        patch *= 1 - outer
        patch += np.float32(0.22) * (outer - inner) + content * inner
        del signed, owner, outer, inner, content

    # Smooth bias field, gain to 16-bit counts, Rician noise.
    unit = [(c / np.float32(n * sp) * 2 - 1) for c, n, sp in zip((z, y, x), shape, spacing)]
    log_bias = sum(np.float32(rng.normal(0.0, 0.15)) * c for c in unit)
    for a in range(3):
        for b in range(a, 3):
            log_bias = log_bias + np.float32(rng.normal(0.0, 0.1)) * unit[a] * unit[b]
    image *= np.exp(np.broadcast_to(log_bias, shape))
    sigma = np.float32(rng.uniform(0.012, 0.025))
    real = rng.standard_normal(shape, dtype=np.float32)
    real *= sigma
    real += image
    imaginary = rng.standard_normal(shape, dtype=np.float32)
    imaginary *= sigma
    image = np.sqrt(real * real + imaginary * imaginary)
    image *= np.float32(case.gain)
    return np.clip(image, 0, 65535).astype(np.uint16), masks


# --- files ---------------------------------------------------------------------------------------------------


def _range(value, name: str, low: int) -> tuple[int, int]:
    pair = (int(value), int(value)) if np.isscalar(value) else tuple(int(v) for v in value)
    if len(pair) != 2 or pair[0] < low or pair[1] < pair[0]:
        raise InputError(name, f"need a number >= {low} or a range (min, max) with min <= max, got {value}")
    return pair


def write_gi_dataset(
    out_dir: str | os.PathLike,
    cases: int = 8,
    seed: int = 0,
    days: int | Sequence[int] = (2, 3),
    slices: int | Sequence[int] = (40, 64),
    sizes: Sequence[tuple[int, int, float, float]] = GI_SIZES,
    progress: bool = True,
) -> Path:
    """Write synthetic case-days in the UW-Madison GI Tract layout and return the ``train.csv`` path.

    Case numbers and day numbers are non-consecutive like the competition's; case ``i`` is the same for a
    given seed whatever ``cases`` is.

    Args:
        out_dir: the dataset root (``train/`` and ``train.csv`` go in it).
        cases: number of patients.
        seed: base seed.
        days: days (scans) per case, a number or an inclusive range.
        slices: slices per case (3 mm apart), a number or an inclusive range; the competition has 144.
        sizes: ``(width, height, pixel width mm, pixel height mm)`` to draw each case's scan size from.
        progress: show a progress bar.

    Returns:
        Path of ``train.csv``.
    """
    if int(cases) < 1:
        raise InputError("cases", f"need at least one case, got {cases}")
    day_range = _range(days, "days", 1)
    slice_range = _range(slices, "slices", 8)
    sizes = [tuple(s) for s in sizes]
    if not sizes or any(len(s) != 4 or min(s[:2]) < 16 or min(s[2:]) <= 0 for s in sizes):
        raise InputError("sizes", "need (width, height, pixel width, pixel height) tuples, at least 16 pixels")
    out_dir = Path(out_dir)
    lines = ["id,class,segmentation"]
    number = 0
    for i in tqdm(range(int(cases)), desc="synth gi", unit="case", disable=not progress):
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(i,)))
        number += int(rng.integers(1, 12))
        n_days = int(rng.integers(day_range[0], day_range[1] + 1))
        day_numbers = np.sort(rng.choice(np.arange(0, 40), size=n_days, replace=False))
        case = _new_case(rng, sizes, slice_range)
        for day in day_numbers:
            day_rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(i, int(day) + 1)))
            image, masks = _render_case_day(case, day_rng)
            stem = f"case{number}_day{int(day)}"
            scans = out_dir / "train" / f"case{number}" / stem / "scans"
            scans.mkdir(parents=True, exist_ok=True)
            for k in range(case.slices):
                name = f"slice_{k + 1:04d}_{case.width}_{case.height}_{case.pixel_w:.2f}_{case.pixel_h:.2f}.png"
                _write_png(scans / name, image[k])
                for cls in GI_CLASSES:
                    lines.append(f"{stem}_slice_{k + 1:04d},{cls},{rle_encode(masks[cls][k])}")
    csv_path = out_dir / "train.csv"
    write_text(csv_path, "\n".join(lines) + "\n")
    return csv_path


def _write_png(path: Path, array: np.ndarray) -> None:
    import SimpleITK as sitk

    with atomic_path(path) as tmp:
        sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.uint16)), str(tmp))
