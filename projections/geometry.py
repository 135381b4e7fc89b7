"""Parallel-beam geometry: which directions a volume is projected from, and onto which detector.

A geometry holds no compute (like ODL's geometries); the projectors in :mod:`seg25d.projections.operators`
turn it into cached index and weight tables.

Coordinates: a volume of shape ``(D, H, W)`` and spacing ``(sd, sh, sw)`` mm has voxel ``(d, h, w)`` at the
physical point ``((d - (D-1)/2) sd, (h - (H-1)/2) sh, (w - (W-1)/2) sw)``, so the rotation centre is the
volume's centre. Every view has a unit ray direction ``r``, a detector column axis ``e_u`` and row axis
``e_v`` (orthonormal, in those (d, h, w) millimetre coordinates). The detector has ``V`` rows and ``U``
columns of size ``du`` mm, centred on the rotation centre: column ``j`` sits at ``u = (j - (U-1)/2) du``.

Two kinds of views:

- *Axis views*: a rotation by ``theta`` about volume axis ``a`` (0 = D, 1 = H, 2 = W). With ``(p, q)`` the other
  two axes in increasing order, ``r = cos(theta) e_p + sin(theta) e_q`` and ``e_u = -sin(theta) e_p +
  cos(theta) e_q``; the detector rows are the volume's own rows along ``a`` (``e_v = e_a``, row spacing
  ``s_a``, rows placed from ``(V - N_a) // 2``). About D at ``theta = 0`` the rays run along H and the image is
  the maximum (or sum) over H, laid out along W. All ``N_a`` rows share one in-plane geometry, which the
  projectors exploit.
- *General views*: any unit direction, e.g. spread over the sphere with :func:`fibonacci_directions`; the
  detector is a ``V x U`` plane of square cells of size ``du`` covering the volume's bounding sphere.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "Geometry", "axis_geometry", "multi_axis_geometry", "sphere_geometry", "direction_geometry",
    "fibonacci_directions", "uniform_angles", "AXIS_NAMES", "plane_axes",
]

AXIS_NAMES = ("D", "H", "W")


def uniform_angles(n: int) -> np.ndarray:
    """``n`` equally spaced angles in ``[0, pi)``."""
    return np.arange(n) * (math.pi / n)


def fibonacci_directions(n: int) -> np.ndarray:
    """``n`` unit vectors spread evenly over the upper half sphere (a Fibonacci lattice), shape ``(n, 3)``.

    Directions ``v`` and ``-v`` give mirrored parallel projections, so a half sphere suffices. Components are
    in (d, h, w) order; the first point is close to the D axis.
    """
    k = np.arange(n) + 0.5
    z = 1.0 - k / n  # in (0, 1): the half sphere with d > 0
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    rho = np.sqrt(1.0 - z**2)
    return np.stack([z, rho * np.cos(phi), rho * np.sin(phi)], axis=1)


def plane_axes(axis: int) -> tuple[int, int]:
    """The two volume axes spanning the plane of rotations about ``axis``, in increasing order."""
    return tuple(a for a in range(3) if a != axis)  # type: ignore[return-value]


class Geometry:
    """A set of parallel-beam views of a ``(D, H, W)`` volume and the detector they share.

    Build it with :func:`axis_geometry`, :func:`multi_axis_geometry`, :func:`sphere_geometry` or
    :func:`direction_geometry`; ``geometry[idx]`` selects views (keeping the detector), ``len(geometry)`` is
    the number of views. Geometries are immutable and hashable, so projectors cache tables per geometry.

    Attributes:
        shape: volume shape ``(D, H, W)``.
        spacing: voxel size ``(sd, sh, sw)`` in mm.
        axes: per view, the rotation axis (0, 1, 2) of an axis view, or -1 for a general view.
        angles: per view, the rotation angle of an axis view (radians; NaN for general views).
        rays: ``(P, 3)`` unit ray directions; ``u_axes``, ``v_axes``: detector column and row axes.
        detector_shape: ``(V, U)``; du: column size in mm (rows of axis views are voxel rows).
    """

    def __init__(self, shape, spacing, axes, angles, rays, u_axes, v_axes, detector_shape, du):
        self.shape = tuple(int(n) for n in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.axes = tuple(int(a) for a in axes)
        self.angles = tuple(float(t) for t in angles)
        self.rays = np.asarray(rays, dtype=float).reshape(-1, 3)
        self.u_axes = np.asarray(u_axes, dtype=float).reshape(-1, 3)
        self.v_axes = np.asarray(v_axes, dtype=float).reshape(-1, 3)
        self.detector_shape = tuple(int(n) for n in detector_shape)
        self.du = float(du)
        for arr in (self.rays, self.u_axes, self.v_axes):
            arr.setflags(write=False)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"shape must be three positive sizes (D, H, W), got {shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be three positive sizes in mm, got {spacing}")
        n = len(self.axes)
        if not (len(self.angles) == len(self.rays) == len(self.u_axes) == len(self.v_axes) == n):
            raise ValueError("per-view arrays differ in length")
        for a in set(self.axes) - {-1}:
            if self.detector_shape[0] < self.shape[a]:
                raise ValueError(f"detector has {self.detector_shape[0]} rows, fewer than the {self.shape[a]} "
                                 f"volume rows along {AXIS_NAMES[a]}")
        angles_key = tuple(None if math.isnan(t) else t for t in self.angles)  # NaN != NaN (general views)
        self._key = (self.shape, self.spacing, self.axes, angles_key, self.rays.round(12).tobytes(),
                     self.u_axes.round(12).tobytes(), self.v_axes.round(12).tobytes(), self.detector_shape, self.du)

    def __len__(self) -> int:
        return len(self.axes)

    def __getitem__(self, index) -> "Geometry":
        idx = np.atleast_1d(np.arange(len(self))[index])
        sub = Geometry(self.shape, self.spacing, np.asarray(self.axes)[idx], np.asarray(self.angles)[idx],
                       self.rays[idx], self.u_axes[idx], self.v_axes[idx], self.detector_shape, self.du)
        parent, views = self.root
        sub._root = (parent, views[idx])
        return sub

    @property
    def root(self) -> tuple["Geometry", np.ndarray]:
        """The geometry this one was sliced from (itself if none) and the indices of its views there.

        Projectors reuse the root's cached tables for slices, e.g. random subsets of views in training.
        """
        return getattr(self, "_root", None) or (self, np.arange(len(self)))

    def __eq__(self, other) -> bool:
        return isinstance(other, Geometry) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        groups = ", ".join(f"{AXIS_NAMES[a] if a >= 0 else 'general'}: {self.axes.count(a)}"
                           for a in sorted(set(self.axes)))
        return (f"Geometry(shape={self.shape}, spacing={self.spacing}, views={len(self)} ({groups}), "
                f"detector_shape={self.detector_shape}, du={self.du:g})")

    def row_spacing(self, view: int) -> float:
        """Detector row size of a view: the voxel size along its rotation axis, or ``du`` for general views."""
        a = self.axes[view]
        return self.spacing[a] if a >= 0 else self.du

    def row_offset(self, axis: int) -> int:
        """First detector row holding the volume's rows for views about ``axis``."""
        return (self.detector_shape[0] - self.shape[axis]) // 2

    def shadows(self, margin: int = 1) -> np.ndarray:
        """Per view, the detector box ``(row0, row1, col0, col1)`` (half-open) that the volume's box
        projects onto, widened by ``margin`` cells and clipped to the detector, shape ``(P, 4)``.

        Rays outside a view's box miss the volume (by more than ``margin`` cells), so projections there hold
        only the fill value and :meth:`MaxIntensityProjection.lift` reads nothing there.

        Example:
            >>> axis_geometry((4, 6, 6), [0.0, math.pi / 4]).shadows(margin=0).tolist()
            [[0, 4, 2, 8], [0, 4, 0, 10]]
        """
        v_count, u_count = self.detector_shape
        size = np.asarray(self.shape) * np.asarray(self.spacing)  # the volume's box in mm

        def cells(axes: np.ndarray, cell: float, count: int) -> tuple[np.ndarray, np.ndarray]:
            half = np.abs(axes) @ size / (2 * cell)  # half the box's shadow, in cells
            lo = np.floor((count - 1) / 2 - half + 0.5 + 1e-9).astype(int) - margin
            hi = np.ceil((count - 1) / 2 + half + 0.5 - 1e-9).astype(int) + margin
            return np.clip(lo, 0, count), np.clip(hi, 0, count)

        col0, col1 = cells(self.u_axes, self.du, u_count)
        row0, row1 = cells(self.v_axes, self.du, v_count)
        for view, a in enumerate(self.axes):  # rows of axis views are the volume's own rows
            if a >= 0:
                row0[view] = max(self.row_offset(a) - margin, 0)
                row1[view] = min(self.row_offset(a) + self.shape[a] + margin, v_count)
        return np.stack([row0, row1, col0, col1], axis=1)

    @property
    def view_groups(self) -> dict[int, np.ndarray]:
        """View indices grouped by rotation axis (-1: general views)."""
        axes = np.asarray(self.axes)
        return {int(a): np.flatnonzero(axes == a) for a in sorted(set(self.axes))}


def _extent(shape, spacing, axes: Sequence[int]) -> float:
    """Diameter (mm) of the smallest ball around the centre containing the volume, projected on ``axes``."""
    return math.sqrt(sum((shape[a] * spacing[a]) ** 2 for a in axes))


def _columns(extent: float, du: float, parity_like: int) -> int:
    u = max(1, math.ceil(extent / du - 1e-9))
    return u + ((u - parity_like) % 2)


def _axis_views(axis: int, angles) -> tuple[list, list, list, list]:
    p, q = plane_axes(axis)
    rays, us, vs = [], [], []
    for t in angles:
        r, u, v = np.zeros(3), np.zeros(3), np.zeros(3)
        r[p], r[q] = math.cos(t), math.sin(t)
        u[p], u[q] = -math.sin(t), math.cos(t)
        v[axis] = 1.0
        rays.append(r), us.append(u), vs.append(v)
    return [axis] * len(rays), list(angles), rays, us, vs


def axis_geometry(shape, angles: Iterable[float] | int, axis: int = 0, spacing=(1.0, 1.0, 1.0)) -> Geometry:
    """Views rotating about one volume axis (0 = D, the classic single-axis setting).

    Args:
        shape: volume shape ``(D, H, W)``.
        angles: angles in radians, or a count of equally spaced angles in ``[0, pi)``.
        axis: rotation axis.
        spacing: voxel size in mm; the detector column size is the finer in-plane spacing.

    Example:
        >>> g = axis_geometry((4, 6, 6), 8)
        >>> len(g), g.detector_shape
        (8, (4, 10))
    """
    return multi_axis_geometry(shape, {axis: angles}, spacing)


def multi_axis_geometry(shape, angles: dict[int, Iterable[float] | int] | int, spacing=(1.0, 1.0, 1.0)) -> Geometry:
    """Views rotating about several volume axes, e.g. ``{0: 8, 1: 8, 2: 8}`` or an int for all three axes.

    The detector has as many rows as the longest rotation axis and enough columns for every plane's diagonal.
    """
    if isinstance(angles, int):
        angles = {0: angles, 1: angles, 2: angles}
    angles = {int(a): (uniform_angles(t) if isinstance(t, (int, np.integer)) else np.asarray(list(t), float))
              for a, t in angles.items()}
    if not angles or any(a not in (0, 1, 2) for a in angles):
        raise ValueError(f"rotation axes must be among 0 (D), 1 (H), 2 (W), got {sorted(angles)}")
    first = min(angles)
    du = min(min(spacing[a] for a in plane_axes(ax)) for ax in angles)
    extent = max(_extent(shape, spacing, plane_axes(ax)) for ax in angles)
    columns = _columns(extent, du, shape[plane_axes(first)[1]])
    rows = max(shape[a] for a in angles)
    views = [[], [], [], [], []]
    for axis, ts in sorted(angles.items()):
        for acc, part in zip(views, _axis_views(axis, ts)):
            acc.extend(part)
    return Geometry(shape, spacing, *views, detector_shape=(rows, columns), du=du)


def direction_geometry(shape, directions, spacing=(1.0, 1.0, 1.0), axis_views=True) -> Geometry:
    """Views along arbitrary unit directions ``(P, 3)`` in (d, h, w) order, onto a square detector.

    The detector covers the volume's bounding sphere. Directions perpendicular to a volume axis become axis
    views (fast path) when ``axis_views`` is true, so the detector rows then also fit the volume's rows.
    """
    directions = np.asarray(directions, dtype=float).reshape(-1, 3)
    norms = np.linalg.norm(directions, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms) & (norms > 0)):
        raise ValueError("directions must be finite, non-zero vectors")
    directions = directions / norms
    du = min(spacing)
    diameter = _extent(shape, spacing, (0, 1, 2))
    columns = _columns(diameter, du, shape[2])
    rows = max(columns, max(shape))
    axes, angles, rays, us, vs = [], [], [], [], []
    for r in directions:
        axis = next((a for a in range(3) if abs(r[a]) < 1e-9), -1) if axis_views else -1
        if axis >= 0:
            p, q = plane_axes(axis)
            t = math.atan2(r[q], r[p]) % math.pi
            part = _axis_views(axis, [t])
        else:
            ref = np.array([1.0, 0.0, 0.0]) if abs(r[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
            v = ref - (ref @ r) * r
            v /= np.linalg.norm(v)
            u = np.cross(r, v)
            part = ([-1], [math.nan], [r], [u], [v])
        for acc, item in zip((axes, angles, rays, us, vs), part):
            acc.extend(item)
    return Geometry(shape, spacing, axes, angles, rays, us, vs, detector_shape=(rows, columns), du=du)


def sphere_geometry(shape, n: int, spacing=(1.0, 1.0, 1.0)) -> Geometry:
    """``n`` general views spread over the half sphere (Fibonacci lattice)."""
    return direction_geometry(shape, fibonacci_directions(n), spacing, axis_views=False)
