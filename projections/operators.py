"""Projectors built from a :class:`~seg25d.projections.geometry.Geometry`: Radon, its adjoint, MIP and slab means.

Inner product: the plain sum over voxels and over detector cells. :class:`RayBackprojection` is the exact
transpose of :class:`RayTransform` (``<R x, y> = <x, R* y>`` to rounding), and autograd uses each as the
other's derivative. Index and weight tables are built once per (geometry, device, dtype), vectorised, and
cached on that device: the operators run wherever their input is (a model moved with ``.to("cuda")`` projects on
the GPU), and a call copies nothing between host and device.

Shapes: volumes ``(B, C, D, H, W)``; projections ``(B, C, P, V, U)`` with ``P`` views and the geometry's
``(V, U)`` detector. Axis views fill the detector rows of their volume rows and leave the rest 0 (radon) or
at the fill value (MIP: the volume's minimum per batch item and channel, the MIP of an empty ray).
"""

from __future__ import annotations

import collections
import functools
import warnings

import numpy as np
import scipy.sparse
import torch

from seg25d.projections import general_views
from seg25d.projections.axis_tables import mip_tables, splat_matrix
from seg25d.projections.geometry import Geometry, plane_axes

__all__ = ["RayTransform", "RayBackprojection", "MaxIntensityProjection", "SlabMeanProjection", "projector_plan"]

_CHUNK = 1 << 20  # elements per MIP temporary: keeps gathers in cache and memory below the volume's size


def _ray_chunks(u_count: int, k: int, cols: int):
    """``(first ray, last ray + 1, their samples' slice)`` of detector columns in chunks of about ``_CHUNK``
    sampled values (``k`` samples per ray, ``cols`` values per sample)."""
    chunk = max(1, _CHUNK // (k * cols))
    for s in range(0, u_count, chunk):
        e = min(u_count, s + chunk)
        yield s, e, slice(s * k, e * k)


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the operations used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, device=values.device, check_invariants=False)


class _AxisGroup:
    """Views rotating about one axis: a sparse radon matrix for the plane and Joseph tables for MIP.

    The tables are built once with numpy and copied to the device: per view, its rows of the radon matrix and
    the transpose of those rows. The matrices of a subset of views (and their transposes) are put together from
    these blocks on the device, without sorting or host round trips.
    """

    def __init__(self, geometry: Geometry, views: np.ndarray, device, dtype):
        self.geometry, self.views = geometry, views
        self.axis = geometry.axes[views[0]]
        self.p, self.q = plane_axes(self.axis)
        self.offset = geometry.row_offset(self.axis)
        self.device, self.dtype = device, dtype
        rows, cols, vals, shape = splat_matrix(geometry, views)
        sparse = scipy.sparse.csr_matrix((vals, (rows, cols)), shape=shape)
        sparse.sort_indices()
        self.n_plane = n = shape[1]
        u = geometry.detector_shape[1]
        self._entries = [int(sparse.indptr[v * u]) for v in range(len(views) + 1)]  # each view's rows' entries
        self._crow = torch.as_tensor(sparse.indptr.astype(np.int64), device=device)
        self._col = torch.as_tensor(sparse.indices.astype(np.int64), device=device)
        self._values = torch.as_tensor(sparse.data, dtype=dtype, device=device)
        blocks = [sparse[v * u:(v + 1) * u].T.tocsr() for v in range(len(views))]  # (Np * Nq, U) each
        for block in blocks:
            block.sort_indices()
        self._t_entries = np.cumsum([0] + [b.nnz for b in blocks]).tolist()
        self._t_crow = torch.as_tensor(np.stack([b.indptr for b in blocks]).astype(np.int64), device=device)
        self._t_col = torch.as_tensor(np.concatenate([b.indices for b in blocks]).astype(np.int64), device=device)
        self._t_values = torch.as_tensor(np.concatenate([b.data for b in blocks]), dtype=dtype, device=device)
        self._t_row = torch.as_tensor(np.concatenate([np.repeat(np.arange(n), np.diff(b.indptr)) for b in blocks]),
                                      device=device)  # the row of each entry
        self._subsets: collections.OrderedDict = collections.OrderedDict()
        self._slab_index: dict[tuple[int, int], torch.Tensor] = {}
        self._slab_weights: dict[tuple[int, int], tuple[torch.Tensor, dict]] = {}
        perm = (2 + self.p, 2 + self.q, 2 + self.axis, 0, 1)
        self.perm, self.inverse = perm, tuple(int(i) for i in np.argsort(perm))

    def _rows_of(self, key: tuple[int, ...]):
        """CSR arrays of the radon matrix of views ``key``: their row blocks one below the other."""
        u = self.geometry.detector_shape[1]
        spans = [(self._entries[v], self._entries[v + 1]) for v in key]
        crows, done = [self._crow.new_zeros(1)], 0
        for v, (first, last) in zip(key, spans):
            crows.append(self._crow[v * u + 1:(v + 1) * u + 1] - (first - done))
            done += last - first
        return (torch.cat(crows), torch.cat([self._col[a:b] for a, b in spans]),
                torch.cat([self._values[a:b] for a, b in spans]))

    def _columns_of(self, key: tuple[int, ...]):
        """CSR arrays of the transpose of views ``key``'s matrix: their transposed blocks side by side (each row
        holds the entries of the first view, then of the second, ...: columns stay sorted)."""
        u = self.geometry.detector_shape[1]
        crows = [self._t_crow[v] for v in key]
        counts = torch.stack(crows).diff(dim=1).sum(dim=0)
        crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        size = sum(self._t_entries[v + 1] - self._t_entries[v] for v in key)
        col, values = self._t_col.new_empty(size), self._t_values.new_empty(size)
        filled = crow[:-1].clone()  # entries placed so far in each row
        for k, (v, crow_v) in enumerate(zip(key, crows)):
            first, last = self._t_entries[v], self._t_entries[v + 1]
            rows = self._t_row[first:last]
            slot = (filled - crow_v[:-1]).index_select(0, rows).add_(torch.arange(last - first, device=self.device))
            col.index_copy_(0, slot, self._t_col[first:last] + k * u)
            values.index_copy_(0, slot, self._t_values[first:last])
            filled += crow_v.diff()
        return crow, col, values

    def matrices(self, local: np.ndarray):
        """Radon matrix of the views ``local`` (positions in this group) and its transpose, as torch CSR.

        Subsets (random views in training) are row blocks of the group's matrix; the last few are cached.
        """
        key = tuple(int(v) for v in local)
        if key not in self._subsets:
            shape = (len(key) * self.geometry.detector_shape[1], self.n_plane)
            full = key == tuple(range(len(self.views)))
            matrix = (self._crow, self._col, self._values) if full else self._rows_of(key)
            self._subsets[key] = (_csr(*matrix, shape), _csr(*self._columns_of(key), shape[::-1]))
            if len(self._subsets) > 8:
                self._subsets.popitem(last=False)
        self._subsets.move_to_end(key)
        return self._subsets[key]

    @functools.cached_property
    def mip_tables(self):
        tables = []
        for view in self.views:
            i0, i1, alpha, k = mip_tables(self.geometry, int(view))
            tables.append((torch.as_tensor(i0, device=self.device), torch.as_tensor(i1, device=self.device),
                           torch.as_tensor(alpha, dtype=self.dtype, device=self.device)[:, None], k))
        return tables

    # layouts: plane (Np*Nq, Na*B*C) <-> volume (B, C, D, H, W); detector (Pg*U, Na*B*C) <-> (B, C, Pg, Na, U)
    def to_plane(self, x):
        return x.permute(self.perm).reshape(-1, x.shape[2 + self.axis] * x.shape[0] * x.shape[1])

    def from_plane(self, xt, b, c):
        shape = self.geometry.shape
        return xt.view(shape[self.p], shape[self.q], shape[self.axis], b, c).permute(self.inverse)

    def to_volume_rows(self, y):
        """Detector images of this group's views ``(B, C, Pg, V, U)`` -> ``(Pg * U, N_a * B * C)``."""
        rows = self.geometry.shape[self.axis]
        y = y[:, :, :, self.offset:self.offset + rows]
        return y.permute(2, 4, 3, 0, 1).reshape(-1, rows * y.shape[0] * y.shape[1])

    def from_volume_rows(self, yt, b, c, n_views=None):
        rows, u = self.geometry.shape[self.axis], self.geometry.detector_shape[1]
        y = yt.view(n_views or len(self.views), u, rows, b, c).permute(3, 4, 0, 2, 1)
        pad = self.geometry.detector_shape[0] - rows - self.offset
        return torch.nn.functional.pad(y, (0, 0, self.offset, pad))

    def radon(self, x, local: np.ndarray):
        matrix, _ = self.matrices(local)
        return self.from_volume_rows(torch.sparse.mm(matrix, self.to_plane(x)), x.shape[0], x.shape[1], len(local))

    def backproject(self, y, local: np.ndarray):
        """``y`` holds the views ``local`` of this group, in order."""
        _, matrix_t = self.matrices(local)
        return self.from_plane(torch.sparse.mm(matrix_t, self.to_volume_rows(y)), y.shape[0], y.shape[1])

    def slab_samples(self, k: int, slabs: int) -> torch.Tensor | None:
        """Sample indices ``(slabs, L)`` of ``slabs`` equal bands of a ray's ``k`` samples (shorter bands repeat
        their last sample, which changes neither maximum nor argmax); None for one slab."""
        if slabs == 1:
            return None
        if k < slabs:
            raise ValueError(f"{slabs} slabs need at least {slabs} samples per ray, the volume has {k}")
        if (k, slabs) not in self._slab_index:
            bounds = [j * k // slabs for j in range(slabs + 1)]
            length = max(b - a for a, b in zip(bounds, bounds[1:]))
            index = [[min(a + t, b - 1) for t in range(length)] for a, b in zip(bounds, bounds[1:])]
            self._slab_index[(k, slabs)] = torch.tensor(index, device=self.device)
        return self._slab_index[(k, slabs)]

    def mip(self, x, want_argmax: bool, local: np.ndarray, slabs: int = 1):
        """MIP of the group's views ``local`` (positions in this group): ``(B, C, len(local) * slabs, V, U)``,
        each view's ``slabs`` images in order of depth along the ray's major axis."""
        b, c = x.shape[:2]
        rows = self.geometry.shape[self.axis]
        cols = rows * b * c
        xe = x.new_empty(self.n_plane + 1, cols)  # the plane layout plus one row holding the fill value
        shape = self.geometry.shape
        xe[:-1].view(shape[self.p], shape[self.q], rows, b, c).copy_(x.permute(self.perm))
        fill = x.amin(dim=(2, 3, 4)).reshape(b * c).repeat(rows)  # per item and channel, tiled like the columns
        xe[-1] = fill
        u_count = self.geometry.detector_shape[1]
        out = xe.new_empty(len(local), slabs, u_count, cols)
        args = torch.empty(out.shape, dtype=torch.long, device=x.device) if want_argmax else None
        for n, view in enumerate(local):
            i0, i1, alpha, k = self.mip_tables[view]
            index = self.slab_samples(k, slabs)
            for s, e, sl in _ray_chunks(u_count, k, cols):
                v = torch.lerp(xe.index_select(0, i0[sl]), xe.index_select(0, i1[sl]), alpha[sl]).view(e - s, k, cols)
                v = v.unsqueeze(1) if index is None else v[:, index]  # (e - s, slabs, L, cols)
                if want_argmax:
                    values, where = torch.max(v, dim=2)
                    out[n, :, s:e] = values.transpose(0, 1)
                    if index is not None:
                        where = torch.gather(index.expand(e - s, -1, -1), 2, where)
                    args[n, :, s:e] = where.transpose(0, 1)
                else:
                    out[n, :, s:e] = torch.amax(v, dim=2).transpose(0, 1)
        y = self.from_volume_rows(out.view(-1, cols), b, c, len(local) * slabs)
        if self.offset or y.shape[3] != rows:  # rows beyond the volume see nothing: fill value
            mask = torch.zeros(y.shape[3], dtype=torch.bool, device=y.device)
            mask[self.offset:self.offset + rows] = True
            y = torch.where(mask[:, None], y, fill.view(rows, b, c)[0].view(b, c, 1, 1, 1))
        return y, (args.view(-1, u_count, cols) if want_argmax else None)

    def slab_weights(self, view: int, slabs: int, kind: str):
        """``(band, weight)`` of a view's Joseph samples: the band (slab) of each of a ray's ``K`` samples, and
        each sample's weight ``(U * K, 1)`` in its band's ``"mean"`` (1 over the band's valid samples) or
        ``"sum"`` (1); 0 for samples outside the volume."""
        key = (view, slabs)
        if key not in self._slab_weights:
            i0, _, _, k = self.mip_tables[view]
            if k < slabs:
                raise ValueError(f"{slabs} slabs need at least {slabs} samples per ray, the volume has {k}")
            bounds = [j * k // slabs for j in range(slabs + 1)]  # the bands of slab_samples (and slab MIP)
            band = torch.tensor([s for s in range(slabs) for _ in range(bounds[s], bounds[s + 1])], device=self.device)
            valid = (i0 != self.n_plane).to(self.dtype).view(-1, k)
            counts = valid.new_zeros(valid.shape[0], slabs).index_add_(1, band, valid)
            weight = valid / counts.clamp_min(1)[:, band]
            self._slab_weights[key] = (band, {"mean": weight.reshape(-1, 1), "sum": valid.reshape(-1, 1)})
        band, weights = self._slab_weights[key]
        return band, weights[kind]

    def slab_reduce(self, x, local: np.ndarray, slabs: int, kind: str):
        """Mean (``kind="mean"``) or sum (``"sum"``) over the samples inside the volume of each band of every ray
        of the views ``local``: ``(B, C, len(local) * slabs, V, U)`` like :meth:`mip`, 0 where a band holds none."""
        b, c = x.shape[:2]
        rows = self.geometry.shape[self.axis]
        cols = rows * b * c
        xe = x.new_zeros(self.n_plane + 1, cols)  # the plane layout plus a row of zeros for invalid samples
        shape = self.geometry.shape
        xe[:-1].view(shape[self.p], shape[self.q], rows, b, c).copy_(x.permute(self.perm))
        u_count = self.geometry.detector_shape[1]
        out = xe.new_empty(len(local), slabs, u_count, cols)
        for n, view in enumerate(local):
            i0, i1, alpha, k = self.mip_tables[view]
            band, weight = self.slab_weights(view, slabs, kind)
            for s, e, sl in _ray_chunks(u_count, k, cols):
                v = torch.lerp(xe.index_select(0, i0[sl]), xe.index_select(0, i1[sl]), alpha[sl]) * weight[sl]
                sums = v.new_zeros(e - s, slabs, cols).index_add_(1, band, v.view(e - s, k, cols))
                out[n, :, s:e] = sums.transpose(0, 1)
        return self.from_volume_rows(out.view(-1, cols), b, c, len(local) * slabs)

    def slab_spread(self, y, local: np.ndarray, kind: str):
        """The adjoint of :meth:`slab_reduce` of the same ``kind``: each image value back onto its band's samples
        with their weights; ``y`` holds the views ``local`` of this group, in order (each view's slabs
        consecutive)."""
        b, c = y.shape[:2]
        u_count = self.geometry.detector_shape[1]
        slabs = y.shape[2] // len(local)
        yt = self.to_volume_rows(y)
        cols = yt.shape[-1]
        yt = yt.view(len(local), slabs, u_count, cols)
        out = yt.new_zeros(self.n_plane + 1, cols)
        for n, view in enumerate(local):
            i0, i1, alpha, k = self.mip_tables[view]
            band, weight = self.slab_weights(view, slabs, kind)
            for s, e, sl in _ray_chunks(u_count, k, cols):
                v = yt[n, :, s:e].index_select(0, band).transpose(0, 1).reshape(-1, cols) * weight[sl]
                out.index_add_(0, i0[sl], v * (1 - alpha[sl]))
                out.index_add_(0, i1[sl], v * alpha[sl])
        return self.from_plane(out[:-1], b, c)

    def mip_lift(self, y, args, local: np.ndarray):
        """``y`` holds the views ``local`` of this group, in order (each view's slabs consecutive); ``args``
        from :meth:`mip` on them.

        Maxima of a one-channel volume serve every channel of ``y``.
        """
        b, c = y.shape[:2]
        rows, u_count = self.geometry.shape[self.axis], self.geometry.detector_shape[1]
        images = args.shape[0]
        slabs = images // len(local)
        if args.shape[-1] != rows * b * c:
            args = args.view(images, u_count, rows, b, 1).expand(-1, -1, -1, -1, c).reshape(images, u_count, -1)
        yt = self.to_volume_rows(y).view(images, -1, args.shape[-1])
        n_plane = self.n_plane
        cols = yt.shape[-1]
        out = yt.new_zeros((n_plane + 1) * cols)
        column = torch.arange(cols, device=y.device)
        for n in range(images):
            i0, i1, alpha, k = self.mip_tables[local[n // slabs]]
            s = torch.arange(yt.shape[1], device=y.device)[:, None] * k + args[n]
            a = alpha[:, 0][s]
            out.index_add_(0, (i0[s] * cols + column).reshape(-1), (yt[n] * (1 - a)).reshape(-1))
            out.index_add_(0, (i1[s] * cols + column).reshape(-1), (yt[n] * a).reshape(-1))
        return self.from_plane(out.view(n_plane + 1, cols)[:n_plane], b, c)


class _GeneralGroup:
    """General views, computed on the fly (see :mod:`seg25d.projections.general_views`)."""

    def __init__(self, geometry: Geometry, views: np.ndarray, device, dtype):
        self.geometry, self.views = geometry, [int(v) for v in views]
        self.coords = general_views.voxel_coordinates(geometry.shape, geometry.spacing, device, dtype)

    @staticmethod
    def _flat(x):
        return x.reshape(x.shape[0] * x.shape[1], -1).t()

    def _volume(self, xt, b, c):
        return xt.t().reshape(b, c, *self.geometry.shape)

    def _stack(self, images, b, c):
        rows, cols = self.geometry.detector_shape
        return torch.stack([img.t().reshape(b, c, rows, cols) for img in images], dim=2)

    def _views(self, y):
        return [y[:, :, n].reshape(y.shape[0] * y.shape[1], -1).t() for n in range(y.shape[2])]

    def radon(self, x, local: np.ndarray):
        xt = self._flat(x)
        return self._stack([general_views.radon(self.geometry, self.views[n], xt, self.coords) for n in local],
                           *x.shape[:2])

    def backproject(self, y, local: np.ndarray):
        out = sum(general_views.backproject(self.geometry, self.views[n], yv, self.coords)
                  for n, yv in zip(local, self._views(y)))
        return self._volume(out, *y.shape[:2])

    def mip(self, x, want_argmax: bool, local: np.ndarray, slabs: int = 1):
        if slabs != 1:
            raise NotImplementedError("slab MIP is implemented for views about a coordinate axis only")
        xt = self._flat(x)
        results = [general_views.mip(self.geometry, self.views[n], xt, want_argmax) for n in local]
        y = self._stack([r[0] for r in results], *x.shape[:2])
        return y, ([r[1] for r in results] if want_argmax else None)

    def slab_reduce(self, x, local: np.ndarray, slabs: int, kind: str):
        raise NotImplementedError("slab means are implemented for views about a coordinate axis only")

    def slab_spread(self, y, local: np.ndarray, kind: str):
        raise NotImplementedError("slab means are implemented for views about a coordinate axis only")

    def mip_lift(self, y, args, local: np.ndarray):
        n_vox = self.coords.shape[0]
        b, c = y.shape[:2]
        if args and args[0].shape[1] != b * c:  # maxima of a one-channel volume serve every channel
            args = [a.view(-1, b, 1).expand(-1, -1, c).reshape(-1, b * c) for a in args]
        out = sum(general_views.mip_lift(self.geometry, self.views[n], yv, a, n_vox)
                  for n, yv, a in zip(local, self._views(y), args))
        return self._volume(out, *y.shape[:2])


class _Plan:
    """All cached tables of one geometry on one device and dtype; methods act on a subset of its views."""

    def __init__(self, geometry: Geometry, device, dtype):
        self.geometry, self.device = geometry, device
        self._image_index: dict[tuple, torch.Tensor] = {}
        self.groups = [(_AxisGroup if axis >= 0 else _GeneralGroup)(geometry, views, device, dtype)
                       for axis, views in geometry.view_groups.items()]
        # view -> (group number, position in the group)
        self.where = {}
        for g, group in enumerate(self.groups):
            for pos, view in enumerate(group.views):
                self.where[int(view)] = (g, pos)

    def split(self, views: np.ndarray):
        """Per group: (group, positions in the group, positions in ``views``) of the requested views."""
        parts = {}
        for out_pos, view in enumerate(views):
            g, pos = self.where[int(view)]
            parts.setdefault(g, ([], []))
            parts[g][0].append(pos), parts[g][1].append(out_pos)
        return [(self.groups[g], np.asarray(local), np.asarray(out)) for g, (local, out) in sorted(parts.items())]

    def images(self, positions: np.ndarray, slabs: int) -> torch.Tensor:
        """Image indices, on the plan's device, of the views at ``positions`` when each view has ``slabs``
        consecutive images; the last 64 index sets are kept, so repeated calls copy nothing to the device."""
        key = (tuple(int(p) for p in positions), slabs)
        if key not in self._image_index:
            if len(self._image_index) >= 64:
                self._image_index.pop(next(iter(self._image_index)))
            index = np.asarray(key[0], dtype=np.int64)[:, None] * slabs + np.arange(slabs)
            self._image_index[key] = torch.as_tensor(index.reshape(-1), device=self.device)
        return self._image_index[key]


class _PlanView:
    """A plan restricted to some views of its geometry (a sliced geometry reuses its parent's tables)."""

    def __init__(self, plan: _Plan, views: np.ndarray, geometry: Geometry):
        self.plan, self.views, self.geometry = plan, views, geometry

    def _check_volume(self, x):
        if x.dim() != 5 or tuple(x.shape[2:]) != self.geometry.shape:
            raise ValueError(f"expected a volume (B, C, {', '.join(map(str, self.geometry.shape))}), "
                             f"got {tuple(x.shape)}")

    def _check_projections(self, y, slabs: int = 1):
        expected = (len(self.views) * slabs, *self.geometry.detector_shape)
        if y.dim() != 5 or tuple(y.shape[2:]) != expected:
            raise ValueError(f"expected projections (B, C, {', '.join(map(str, expected))}), got {tuple(y.shape)}")

    def _place(self, parts, x, slabs: int = 1):
        """Assemble per-group results ``(positions, images)`` into ``(B, C, len(views) * slabs, V, U)``."""
        if len(parts) == 1:
            return parts[0][1]
        out = x.new_empty(x.shape[0], x.shape[1], len(self.views) * slabs, *self.geometry.detector_shape)
        for positions, part in parts:
            out.index_copy_(2, self.plan.images(positions, slabs), part)
        return out

    def radon(self, x):
        self._check_volume(x)
        x = x.contiguous()
        return self._place([(positions, group.radon(x, local))
                            for group, local, positions in self.plan.split(self.views)], x)

    def backproject(self, y):
        self._check_projections(y)
        y = y.contiguous()
        out = None
        for group, local, positions in self.plan.split(self.views):
            yg = (y if len(positions) == len(self.views)
                  else y.index_select(2, self.plan.images(positions, 1)))
            part = group.backproject(yg, local)
            out = part.contiguous() if out is None else out.add_(part)
        return out

    def mip(self, x, want_argmax=False, slabs: int = 1):
        self._check_volume(x)
        x = x.contiguous()
        results = [(positions, *group.mip(x, want_argmax, local, slabs))
                   for group, local, positions in self.plan.split(self.views)]
        return self._place([(p, img) for p, img, _ in results], x, slabs), [arg for _, _, arg in results]

    def mip_lift(self, y, args):
        slabs = y.shape[2] // max(1, len(self.views))
        self._check_projections(y, slabs)
        y = y.contiguous()
        out = None
        for (group, local, positions), arg in zip(self.plan.split(self.views), args):
            part = group.mip_lift(y.index_select(2, self.plan.images(positions, slabs)), arg, local)
            out = part.contiguous() if out is None else out.add_(part)
        return out

    def slab_reduce(self, x, slabs: int, kind: str):
        self._check_volume(x)
        x = x.contiguous()
        return self._place([(positions, group.slab_reduce(x, local, slabs, kind))
                            for group, local, positions in self.plan.split(self.views)], x, slabs)

    def slab_spread(self, y, kind: str):
        slabs = y.shape[2] // max(1, len(self.views))
        self._check_projections(y, slabs)
        y = y.contiguous()
        out = None
        for group, local, positions in self.plan.split(self.views):
            part = group.slab_spread(y.index_select(2, self.plan.images(positions, slabs)), local, kind)
            out = part.contiguous() if out is None else out.add_(part)
        return out


@functools.lru_cache(maxsize=16)
def _cached_plan(geometry: Geometry, device: str, dtype: torch.dtype) -> _Plan:
    return _Plan(geometry, torch.device(device), dtype)


def projector_plan(geometry: Geometry, like: torch.Tensor) -> _PlanView:
    """The cached tables of ``geometry`` for tensors on ``like``'s device and dtype.

    A geometry sliced from another (``geometry[idx]``) shares its parent's tables.
    """
    root, views = geometry.root
    return _PlanView(_cached_plan(root, str(like.device), like.dtype), views, geometry)


class _RadonFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, geometry):
        ctx.geometry = geometry
        return projector_plan(geometry, x).radon(x)

    @staticmethod
    def backward(ctx, grad):
        return projector_plan(ctx.geometry, grad).backproject(grad), None


class _BackprojectFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, geometry):
        ctx.geometry = geometry
        return projector_plan(geometry, y).backproject(y)

    @staticmethod
    def backward(ctx, grad):
        return projector_plan(ctx.geometry, grad).radon(grad), None


class _MIPFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, geometry, slabs):
        ctx.geometry = geometry
        y, ctx.args = projector_plan(geometry, x).mip(x, want_argmax=True, slabs=slabs)
        return y

    @staticmethod
    def backward(ctx, grad):
        return projector_plan(ctx.geometry, grad).mip_lift(grad, ctx.args), None, None


class _SlabMeanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, geometry, slabs):
        ctx.geometry = geometry
        return projector_plan(geometry, x).slab_reduce(x, slabs, "mean")

    @staticmethod
    def backward(ctx, grad):
        return projector_plan(ctx.geometry, grad).slab_spread(grad, "mean"), None, None


class _SlabLiftFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, geometry, slabs):
        ctx.geometry, ctx.slabs = geometry, slabs
        return projector_plan(geometry, y).slab_spread(y, "sum")

    @staticmethod
    def backward(ctx, grad):
        return projector_plan(ctx.geometry, grad).slab_reduce(grad, ctx.slabs, "sum"), None, None


class RayTransform:
    """Radon transform (line sums in mm x intensity) along every view of ``geometry``.

    Example:
        >>> from seg25d.projections import axis_geometry
        >>> R = RayTransform(axis_geometry((2, 5, 5), 4))
        >>> x = torch.ones(1, 1, 2, 5, 5)
        >>> R(x).sum(dim=-1).round(decimals=4)  # mass per row and view: 25 voxels of 1 mm^2 (float32 rounding)
        tensor([[[[25., 25.],
                  [25., 25.],
                  [25., 25.],
                  [25., 25.]]]])
    """

    def __init__(self, geometry: Geometry):
        self.geometry = geometry

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _RadonFn.apply(x, self.geometry)

    @property
    def adjoint(self) -> "RayBackprojection":
        return RayBackprojection(self.geometry)

    def __repr__(self) -> str:
        return f"RayTransform({self.geometry!r})"


class RayBackprojection:
    """The exact adjoint of :class:`RayTransform`: smears each detector value back along its ray."""

    def __init__(self, geometry: Geometry):
        self.geometry = geometry

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return _BackprojectFn.apply(y, self.geometry)

    @property
    def adjoint(self) -> RayTransform:
        return RayTransform(self.geometry)

    def __repr__(self) -> str:
        return f"RayBackprojection({self.geometry!r})"


class MaxIntensityProjection:
    """Maximum along every ray of ``geometry`` (Joseph sampling, linear interpolation).

    Nonlinear, so it has no adjoint; its derivative sends a gradient to the voxels each maximum came
    from, and :meth:`lift` applies that same map to any detector data (e.g. 2D masks), given the
    ``argmax`` returned by :meth:`with_argmax`.

    With ``slabs`` > 1 (views about a coordinate axis only) each ray gives ``slabs`` maxima, one per equal band
    of its samples along the ray's major axis (thick-slab MIP): a structure hidden behind a brighter one on
    the same ray shows in its own slab. Projections are then ``(B, C, P * slabs, V, U)``, each view's slabs
    consecutive, in the order of their bands along that axis.
    """

    def __init__(self, geometry: Geometry, slabs: int = 1):
        if int(slabs) < 1:
            raise ValueError(f"slabs must be >= 1, got {slabs}")
        self.geometry, self.slabs = geometry, int(slabs)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            return _MIPFn.apply(x, self.geometry, self.slabs)
        return projector_plan(self.geometry, x).mip(x, slabs=self.slabs)[0]

    def with_argmax(self, x: torch.Tensor):
        """``(projections, argmax)``; ``argmax`` is opaque, for :meth:`lift`."""
        with torch.no_grad():
            return projector_plan(self.geometry, x).mip(x, want_argmax=True, slabs=self.slabs)

    def lift(self, y: torch.Tensor, argmax) -> torch.Tensor:
        """Put each detector value of ``y`` (B, C, P, V, U) into the voxels its ray's maximum came from.

        Linear in ``y`` and differentiable (plain torch gathers and scatters).
        """
        return projector_plan(self.geometry, y).mip_lift(y, argmax)

    @property
    def adjoint(self):
        raise NotImplementedError("MIP is nonlinear and has no adjoint; use lift() for its derivative's adjoint")

    def __repr__(self) -> str:
        slabs = f", slabs={self.slabs}" if self.slabs > 1 else ""
        return f"MaxIntensityProjection({self.geometry!r}{slabs})"


class SlabMeanProjection:
    """Mean intensity along every ray of ``geometry``, per band of ``slabs`` equal bands of its samples (views
    about a coordinate axis only; Joseph sampling as :class:`MaxIntensityProjection`, samples outside the volume
    left out of the mean). Linear: soft tissue a maximum would hide behind brighter structures keeps its share.
    Projections ``(B, C, P * slabs, V, U)``, each view's slabs consecutive, in the order of their bands.

    Its derivative is its exact adjoint; :meth:`lift` spreads detector data (e.g. 2D masks) back over the bands
    at full strength.
    """

    def __init__(self, geometry: Geometry, slabs: int = 1):
        if int(slabs) < 1:
            raise ValueError(f"slabs must be >= 1, got {slabs}")
        self.geometry, self.slabs = geometry, int(slabs)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _SlabMeanFn.apply(x, self.geometry, self.slabs)

    def lift(self, y: torch.Tensor) -> torch.Tensor:
        """Each detector value of ``y`` ``(B, C, P * slabs, V, U)`` put on every sample of its band inside the
        volume (linearly interpolated onto the voxels): the adjoint of the bands' sums. Differentiable."""
        return _SlabLiftFn.apply(y, self.geometry, self.slabs)

    def __repr__(self) -> str:
        return f"SlabMeanProjection({self.geometry!r}, slabs={self.slabs})"
