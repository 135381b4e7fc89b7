"""The random 2.5D U-Net (Angermann & Haltmeier 2019): project, segment in 2D, lift back to 3D.

``x -> project (MIP or Radon) from P views -> shared 2D U-Net -> lift -> head -> logits``. Lifting uses MIP
lifting (each view's output put back at the depth its ray's maximum came from), the filtration F and the
backprojection (the Radon adjoint), or both. With ``slabs`` each view gives one MIP per band of depth along
its rays (thick-slab MIPs), so that structures hidden behind brighter ones on a ray are seen and lifted;
with ``sum_input`` the U-Net also sees each ray's line sum, in which nothing hides a dim structure.
The head is the seed's fine-tuning operator T (average pooling, learnable affine normalisation, sigmoid in
the loss) or a light full-resolution head that also sees the input volume.

With ``scale=2`` all of this runs on a half-resolution grid (the input average- and max-pooled by 2), and
a full-resolution refinement sees the upsampled logits together with the input: the 3D work and memory
drop about eightfold and the 2D work fourfold (like a 3D U-Net whose first layer strides).

The U-Net sees each image cropped to the volume's shadow on the detector (the detector is as wide as the
largest diagonal, which oblique views need and axis-aligned ones do not). Under ``torch.autocast`` (the
trainer's ``train.precision = "bf16"``) the networks run in bf16 and the projections and lifting in fp32.

Training follows seed 002's two paths: path 1 draws ``train_directions`` of the views at random each
forward and trains everything end to end; path 2 runs the inference views (``infer_directions`` per axis)
through a frozen U-Net (:meth:`Projection25D.freeze_unet`; :meth:`encode` gives the U-Net outputs, which a
trainer may cache per volume, and :meth:`decode` the logits) and trains only F, the head and the refinement.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from seg25d.models.registry import register_model
from seg25d.models.unet import UNet
from seg25d.projections import (
    MaxIntensityProjection, RayBackprojection, RayTransform, multi_axis_geometry, resample_views,
)
from seg25d.reconstruction import Filtration, FineTuning, local_mean

__all__ = ["Projection25D", "VolumeHead", "Refinement", "PRESETS", "resolve_scale", "AUTO_SCALE_VOXELS",
           "OUTSIDE_LOGIT"]

#: ``scale="auto"`` works on the input grid up to this many voxels and at half resolution above
AUTO_SCALE_VOXELS = 1_500_000
#: the views' 2D logits where a ray misses the volume (not segmented; their features are 0): certain background
OUTSIDE_LOGIT = -1e4
#: the volume head recomputes its activations in the backward pass above this many voxels
CHECKPOINT_VOXELS = 1_000_000

PRESETS: dict[str, dict] = {
    # The seed's configuration: one rotation axis, MIP, one channel per class, F (ramp) + backprojection, T.
    "paper": dict(axes=(0,), directions=32, train_directions=8, mode="mip", features=None, lift=("backproject",),
                  filter_init="ramp", filter_per_view=True, filter_size=63, head="paper", head_channels=8,
                  head_layers=1, unet={"depth": 4, "base_channels": 16}, aux_loss=False, scale=1, fine_lift=False,
                  slabs=1, infer_directions=None, sum_input=False),
    # Three rotation axes, several feature channels MIP-lifted (each put back at the depth its ray's maximum came
    # from), a head that sees the input volume, and a 2D auxiliary loss on the views (see docs/benchmarks.md for
    # each step's effect; adding backprojected channels measured worse and slower). Inference and path 2 use every
    # view: every other view per axis halves the 2D work and measured about 0.001 lower test Dice (2026-12-05).
    # Each slab image goes to the U-Net with its ray's line sum (a dim vessel broken up among brighter slab
    # maxima still shows whole in the sums). The U-Net normalises each image by its own statistics (instance
    # norm): it learned more per step than with batch norms, whose statistics in training come from one view's
    # slab images at a time (2026-12-06).
    "default": dict(axes=(0, 1, 2), directions=8, train_directions=3, mode="mip", features=2,
                    lift=("mip",), filter_init="identity", filter_per_view=False, filter_size=63, head="volume",
                    head_channels=8, head_layers=1, unet={"depth": 4, "base_channels": 16, "norm": "instance"},
                    aux_loss=True, scale=1, fine_lift=False, slabs=3, infer_directions=None, sum_input=True),
}
LIFTS = ("backproject", "mip")


class VolumeHead(nn.Module):
    """A light full-resolution head: pointwise mixing of the input and the lifted evidence, ``layers`` 3x3x3
    convolutions of ``channels`` channels, then per-class logits.

    On volumes of more than :data:`CHECKPOINT_VOXELS` voxels its activations are recomputed in the backward
    pass instead of stored (activation checkpointing), so its memory is that of its input and output, a few
    volume-sized tensors; on smaller ones the recomputation would cost a fifth of the head's time for memory
    nobody needs.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: int = 8, layers: int = 1):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv3d(in_channels, channels, 1), nn.LeakyReLU(0.01, inplace=True)]
        for _ in range(layers):
            mods += [nn.Conv3d(channels, channels, 3, padding=1), nn.LeakyReLU(0.01, inplace=True)]
        mods.append(nn.Conv3d(channels, out_channels, 1))
        self.net = nn.Sequential(*mods).to(memory_format=torch.channels_last_3d)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last_3d: oneDNN's fast path; measured here 2.5x faster for these norm-free convolutions
        return self.net(x.contiguous(memory_format=torch.channels_last_3d)).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad and x[0, 0].numel() > CHECKPOINT_VOXELS:
            return checkpoint(self._run, x, use_reentrant=False)
        return self._run(x)


def resolve_scale(scale, shape) -> int:
    """A concrete scale for volumes of ``shape``: ``"auto"`` is 1 up to :data:`AUTO_SCALE_VOXELS` voxels
    (accuracy on small volumes: full-resolution lifting and head measured clearly better at 64x96x96) and
    2 above (time and memory: the 3D work drops eightfold; see docs/benchmarks.md)."""
    if scale != "auto":
        return int(scale)
    voxels = 1
    for n in shape:
        voxels *= int(n)
    return 1 if voxels <= AUTO_SCALE_VOXELS else 2


def _pad_even(x: torch.Tensor) -> torch.Tensor:
    """Pad the spatial sizes of ``(B, C, D, H, W)`` to even numbers by repeating the last voxel."""
    pad = [p for n in reversed(x.shape[2:]) for p in (0, n % 2)]
    return nn.functional.pad(x, pad, mode="replicate") if any(pad) else x


def _pool2(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2x average and max pooling of ``(B, C, D, H, W)`` with even sizes, one axis at a time (pairs of
    neighbours); in a 128^3 training step measured 7x faster than ``avg_pool3d`` and ``max_pool3d``."""
    total = peak = x
    for dim in (2, 3, 4):
        pairs = total.unflatten(dim, (-1, 2)).unbind(dim + 1)
        total = pairs[0] + pairs[1]
        pairs = peak.unflatten(dim, (-1, 2)).unbind(dim + 1)
        peak = torch.maximum(pairs[0], pairs[1])
    return total / 8, peak


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    """Trilinear 2x upsampling of ``(B, C, D, H, W)`` (as ``interpolate(..., align_corners=False)``), one axis
    at a time: each voxel becomes two, 3/4 of itself plus 1/4 of its neighbour on that side (edges repeated).
    Measured about 1.3x faster than ``interpolate`` forward and backward, whose CPU backward is slow."""
    for dim in (2, 3, 4):
        n = x.shape[dim]
        padded = torch.cat([x.narrow(dim, 0, 1), x, x.narrow(dim, n - 1, 1)], dim=dim)
        before, after = padded.narrow(dim, 0, n), padded.narrow(dim, 2, n)
        x = torch.stack([torch.lerp(x, before, 0.25), torch.lerp(x, after, 0.25)], dim=dim + 1).flatten(dim, dim + 1)
    return x


class Refinement(nn.Module):
    """Full-resolution refinement at ``scale=2``: upsample the half-resolution logits (trilinear) and add a
    learned per-voxel combination of the input, its local contrast (``x`` minus its 3x3x3 mean) and, with
    ``fine_lift``, the views' features MIP-lifted onto the full grid, which puts thin bright structures back
    where the coarse logits only know "near here".

    One linear 1x1x1 layer, started at zero: training starts from the plain upsampled logits, and the
    full-resolution memory stays at a few single-channel volumes (a hidden layer of even 8 channels at 128^3
    measured several times the time and memory of the whole half-resolution network).
    """

    def __init__(self, in_channels: int, out_channels: int, fine_channels: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_channels, 2 * in_channels + fine_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, logits: torch.Tensor, x: torch.Tensor, fine: torch.Tensor | None = None) -> torch.Tensor:
        """``fine``: the views' features MIP-lifted onto the full-resolution grid (exact depth of each maximum)."""
        up = _upsample2(logits)[(slice(None), slice(None), *(slice(0, n) for n in x.shape[2:]))]
        detail = x - local_mean(x, 3)
        features = [x, detail] + ([fine] if fine is not None else [])
        # the 1x1x1 layer written out: a Conv3d with so few channels pads them to 16 in oneDNN's blocked
        # layout, which measured 270 MB and 0.15 s at 128^3 for what is a few multiply-adds per voxel
        out = up + self.bias.view(1, -1, 1, 1, 1)
        channels = [channel for feature in features for channel in feature.unbind(1)]
        for c, channel in enumerate(channels):
            out = out + self.weight[:, c].view(1, -1, 1, 1, 1) * channel.unsqueeze(1)
        return out


class Projection25D(nn.Module):
    """The random 2.5D U-Net; input ``(B, C, D, H, W)``, output logits ``(B, K, D, H, W)``.

    Args:
        in_channels, out_channels: image channels; classes ``K``.
        axes: rotation axes of the views (0 = D as in the paper; ``(0, 1, 2)`` resolves in-plane curves).
        directions: views per axis, evenly spread over 180 degrees: those training draws from.
        train_directions: views drawn at random per training forward (``m``, path 1), spread over the axes.
        infer_directions: views per axis at inference and in path 2 (``p`` per axis; None: all ``directions``),
            evenly spread and half a spacing from the first, so that no coordinate-axis view is shared by two
            rotation axes (see :meth:`inference_views`).
        mode: ``"mip"`` or ``"radon"`` projections as the U-Net's input.
        features: channels per view and lift kind (default ``K``): the U-Net outputs ``features`` channels for
            each lift; the first ``K`` of all are the views' 2D segmentation logits (auxiliary loss).
        lift: ``("backproject",)``, ``("mip",)`` or both; each lifts its own ``features`` channels.
        filter_init, filter_per_view, filter_size: the filtration F (``"ramp"`` or ``"identity"``).
        head: ``"paper"`` (T: average pooling, affine, sigmoid) or ``"volume"`` (:class:`VolumeHead`, sees the input).
        head_channels, head_layers: width and number of 3x3x3 convolutions of the volume head.
        unet: options of the shared 2D :class:`~seg25d.models.unet.UNet`.
        aux_loss: whether training adds a 2D loss of the views' logits against the projected labels.
        scale: 1 works on the input grid; 2 on a half-resolution grid (the input average- and max-pooled),
            followed by :class:`Refinement` at full resolution. ``"auto"`` must be resolved from the
            training volumes' size with :func:`resolve_scale` before building (the trainer does).
        fine_lift: at ``scale=2`` with MIP lifting, also MIP-lift the views' features onto the full-resolution
            grid for the refinement. Off by default: measured at 128^3 it cost about 45 % more step time and
            twice the inference time for no Dice gain beyond noise (docs/benchmarks.md).
        slabs: MIP views only: each view gives ``slabs`` thick-slab MIPs (one per band of depth along its rays),
            each segmented by the U-Net and MIP-lifted from its own maxima, so that structures hidden behind
            brighter ones on the same ray are seen; backprojection lifts each view's mean over its slabs.
        sum_input: MIP views only: each image goes to the U-Net with a second channel per image channel, its
            rays' line sums (the Radon transform, standardised per image), the same for all slabs of a view.
    """

    def __init__(self, in_channels: int, out_channels: int, *, axes=(0, 1, 2), directions: int = 8,
                 train_directions: int = 3, mode: str = "mip", features: int | None = 2, lift=("mip",),
                 filter_init: str = "identity", filter_per_view: bool = False, filter_size: int = 63,
                 head: str = "volume", head_channels: int = 8, head_layers: int = 1, unet: dict | None = None,
                 aux_loss: bool = True, scale: int = 1, fine_lift: bool = False, slabs: int = 3,
                 infer_directions: int | None = None, sum_input: bool = False):
        super().__init__()
        axes = tuple(int(a) for a in axes)
        lift = tuple(lift)
        features = features or out_channels
        if not axes or any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"axes must be distinct values among 0, 1, 2, got {axes}")
        if mode not in ("mip", "radon"):
            raise ValueError(f"mode must be 'mip' or 'radon', got {mode!r}")
        if not lift or any(k not in LIFTS for k in lift):
            raise ValueError(f"lift must be a non-empty subset of {LIFTS}, got {lift}")
        if not 1 <= train_directions <= directions * len(axes):
            raise ValueError(f"train_directions must be in [1, {directions * len(axes)}], got {train_directions}")
        infer_directions = directions if infer_directions is None else int(infer_directions)
        if not 1 <= infer_directions <= directions:
            raise ValueError(f"infer_directions must be in [1, directions={directions}], got {infer_directions}")
        if features * len(lift) < out_channels:
            raise ValueError(f"features x lifts ({features} x {len(lift)}) must be >= out_channels ({out_channels}): "
                             "the first out_channels view channels are the views' 2D logits")
        if int(slabs) < 1 or (int(slabs) > 1 and mode != "mip"):
            raise ValueError(f"slabs must be 1, or > 1 with mode='mip' (slab maxima), got {slabs} with {mode!r}")
        if sum_input and mode != "mip":
            raise ValueError("sum_input adds line sums to MIP views; with mode='radon' the views are line sums")
        if int(slabs) > 1 and fine_lift:
            raise ValueError("fine_lift works with one slab per view")
        if head not in ("paper", "volume"):
            raise ValueError(f"head must be 'paper' or 'volume', got {head!r}")
        if scale == "auto":
            raise ValueError("scale='auto' is resolved from the volume size before building: "
                             "scale=seg25d.models.projection25d.resolve_scale('auto', shape)")
        if scale not in (1, 2):
            raise ValueError(f"scale must be 1, 2 or 'auto', got {scale!r}")
        self.axes, self.directions, self.train_directions = axes, directions, train_directions
        self.mode, self.features, self.lift_kinds, self.aux_loss = mode, features, lift, aux_loss
        self.out_channels, self.scale, self.fine_lift = out_channels, scale, bool(fine_lift)
        self.slabs, self.infer_directions = int(slabs), infer_directions
        core_channels = in_channels * (2 if scale == 2 else 1)  # average- and max-pooled at scale 2
        self.sum_input = bool(sum_input)
        self.unet = UNet(2, core_channels * (1 + self.sum_input), features * len(lift), **(unet or {}))
        n_views = directions * len(axes)
        self.filtration = Filtration(kernel_size=filter_size, views=n_views if filter_per_view else 1,
                                     channels=features, init=filter_init) if "backproject" in lift else None
        evidence = features * len(lift) + ("mip" in lift)
        if head == "paper":
            if evidence != out_channels:
                raise ValueError("the paper head (T) needs one lifted channel per class: features=out_channels "
                                 "and lift=('backproject',)")
            self.head = FineTuning(out_channels)
        else:
            self.head = VolumeHead(core_channels + evidence, out_channels, head_channels, head_layers)
        self.head_kind = head
        fine = features + 1 if self.fine_lifting else 0
        self.refinement = Refinement(in_channels, out_channels, fine) if scale == 2 else None
        self.unet_frozen = False
        self._geometries: dict[tuple, object] = {}

    # --- geometry -------------------------------------------------------------------------------------------
    def geometry(self, shape):
        """All ``P`` views for a volume shape (cached)."""
        shape = tuple(int(s) for s in shape)
        if shape not in self._geometries:
            self._geometries[shape] = multi_axis_geometry(shape, {a: self.directions for a in self.axes})
        return self._geometries[shape]

    @property
    def n_views(self) -> int:
        return self.directions * len(self.axes)

    def draw_views(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random subset of ``train_directions`` views spread evenly over the axes (path 1)."""
        n_axes = len(self.axes)  # view indices live on the host: they slice the geometry
        per_axis = [self.train_directions // n_axes] * n_axes
        extra = torch.randperm(n_axes, generator=generator, device="cpu")[: self.train_directions % n_axes]
        for i in extra.tolist():
            per_axis[i] += 1
        picks = [a * self.directions + torch.randperm(self.directions, generator=generator, device="cpu")[:n]
                 for a, n in enumerate(per_axis)]
        return torch.sort(torch.cat(picks)).values

    def all_views(self) -> torch.Tensor:
        return torch.arange(self.n_views, device="cpu")

    def inference_views(self) -> torch.Tensor:
        """The views of inference and path 2: ``infer_directions`` per axis, evenly spread over the axis's
        ``directions`` and starting half a spacing in, e.g. 1, 3, 5, 7 of 8 (all of them when equal). With
        every view (or any set starting at 0) the views along the coordinate axes come twice, once from each
        axis they are perpendicular to; this way a subset has as many distinct directions as views."""
        d, k = self.directions, self.infer_directions
        per_axis = torch.tensor([(2 * i + 1) * d // (2 * k) for i in range(k)], device="cpu")
        return torch.cat([a * d + per_axis for a in range(len(self.axes))])

    # --- the two halves -------------------------------------------------------------------------------------
    def core_input(self, x: torch.Tensor) -> torch.Tensor:
        """The grid the projections and the lifting work on: ``x``, or at ``scale=2`` its 2x average and max
        pools (sizes padded to even by repeating the last voxel)."""
        if self.scale == 1:
            return x
        mean, peak = _pool2(_pad_even(x))
        return torch.cat([mean, peak], dim=1)

    @property
    def fine_lifting(self) -> bool:
        """With ``fine_lift`` at ``scale=2`` and MIP lifting, the views' features are also lifted onto the
        full-resolution grid."""
        return self.fine_lift and self.scale == 2 and "mip" in self.lift_kinds

    def encode(self, x: torch.Tensor, views: torch.Tensor) -> tuple:
        """Project onto ``views`` and run the 2D U-Net: ``(features (B, F, m * slabs, V, U), mip_argmax, views,
        fine_argmax, core)``, ``core`` being :meth:`core_input` of ``x``."""
        with torch.autocast(x.device.type, enabled=False):  # geometry in full precision, also under autocast
            x = x.float()
            core = self.core_input(x)
            images, argmax, fine_argmax, geometry = self._project(x, core, views)
        return self._segment(images, geometry), argmax, views, fine_argmax, core

    def _segment(self, images: torch.Tensor, geometry) -> torch.Tensor:
        """The 2D U-Net on every image ``(B, C, n, V, U)``, each cropped to its view's shadow (the detector box
        the volume projects onto; crops of one size go through together), pasted back onto the detector with
        zeros around: rays that miss the volume are not segmented and carry no evidence (about 30 % of the
        pixels of the default views of a 64x96x96 volume)."""
        b, c, n, v, u = images.shape
        boxes = self._shadows(geometry)
        sizes = [(r1 - r0, c1 - c0) for r0, r1, c0, c1 in boxes.tolist()]
        outputs = [None] * n
        for size in sorted(set(sizes)):
            group = [i for i in range(n) if sizes[i] == size]
            crops = torch.stack([images[:, :, i, r0:r1, c0:c1] for i in group
                                 for r0, r1, c0, c1 in [boxes[i].tolist()]], dim=1)
            out = self.unet(crops.flatten(0, 1)).unflatten(0, (b, len(group)))  # crops: (B, k, C, h, w)
            for j, i in enumerate(group):
                r0, r1, c0, c1 = boxes[i].tolist()
                outputs[i] = nn.functional.pad(out[:, j], (c0, u - c1, r0, v - r1))
        return torch.stack(outputs, dim=2)

    def _shadows(self, geometry) -> np.ndarray:
        """Each image's shadow box ``(row0, row1, col0, col1)``; a view's slab images share its box."""
        return np.repeat(geometry.shadows(), self.slabs, axis=0)

    def _view_logits(self, encoded: tuple) -> torch.Tensor:
        """The views' 2D logits ``(B, K, m * slabs, V, U)``, :data:`OUTSIDE_LOGIT` outside their shadows."""
        features, _, views, _, core = encoded
        logits = features[:, : self.out_channels]
        inside = torch.zeros(logits.shape[2:], dtype=torch.bool, device=logits.device)
        for i, (r0, r1, c0, c1) in enumerate(self._shadows(self.geometry(core.shape[2:])[views.cpu().numpy()])):
            inside[i, r0:r1, c0:c1] = True
        return torch.where(inside, logits, OUTSIDE_LOGIT)

    def _project(self, x: torch.Tensor, core: torch.Tensor, views: torch.Tensor) -> tuple:
        """The U-Net's input images ``(B, C, m * slabs, V, U)``, the MIP argmax, the fine-grid argmax and the
        views' geometry on the core grid."""
        geometry = self.geometry(core.shape[2:])[views.cpu().numpy()]
        argmax = None
        mip = MaxIntensityProjection(geometry, self.slabs)
        if self.mode == "mip":
            if "mip" in self.lift_kinds and core.shape[1] == 1:
                images, argmax = mip.with_argmax(core)
            else:
                images = mip(core)
        else:
            images = RayTransform(geometry)(core) / math.sqrt(sum(s * s for s in core.shape[2:]))
        if "mip" in self.lift_kinds and argmax is None:
            # MIP lifting needs one maximum per ray: that of the channel mean for multi-channel input
            _, argmax = mip.with_argmax(core.mean(dim=1, keepdim=True))
        if self.sum_input:
            sums = RayTransform(geometry)(core)
            std, mean = torch.std_mean(sums, dim=(3, 4), keepdim=True)
            sums = (sums - mean) / std.clamp_min(1e-6)
            images = torch.cat([images, sums.repeat_interleave(self.slabs, dim=2)], dim=1)
        fine_argmax = None
        if self.fine_lifting:
            xp = _pad_even(x)
            fine = self.geometry(xp.shape[2:])[views.cpu().numpy()]
            _, fine_argmax = MaxIntensityProjection(fine, self.slabs).with_argmax(xp.mean(dim=1, keepdim=True))
        return images, argmax, fine_argmax, geometry

    def decode(self, x: torch.Tensor, encoded: tuple) -> torch.Tensor:
        """Lift the views' features back to the volume, apply the head (and refinement): logits ``(B, K, D, H, W)``."""
        with torch.autocast(x.device.type, enabled=False):  # geometry in full precision, also under autocast
            core, evidence, fine_evidence = self._lift(x.float(), encoded)
        logits = self.head(evidence) if self.head_kind == "paper" else self.head(torch.cat([core, evidence], dim=1))
        if self.refinement is not None:
            logits = self.refinement(logits, x, fine_evidence)
        return logits

    def _lift(self, x: torch.Tensor, encoded: tuple) -> tuple:
        """The core grid, the lifted evidence on it and (with fine lifting) on the full-resolution grid."""
        features, argmax, views, fine_argmax, core = encoded
        features = features.float()
        geometry = self.geometry(core.shape[2:])[views.cpu().numpy()]
        m = len(views)
        parts = []
        groups = dict(zip(self.lift_kinds, features.split(self.features, dim=1)))
        if "backproject" in groups:
            view_index = views.to(features.device) if self.filtration.weight.shape[0] > 1 else None
            per_view = groups["backproject"]
            if self.slabs > 1:
                per_view = per_view.unflatten(2, (m, self.slabs)).mean(dim=3)
            parts.append(RayBackprojection(geometry)(self.filtration(per_view / m, view_index)))
        if "mip" in groups:
            mip = MaxIntensityProjection(geometry, self.slabs)
            ones = torch.ones_like(groups["mip"][:, :1])
            parts.append(mip.lift(torch.cat([groups["mip"], ones], dim=1) / m, argmax))  # last: maxima per voxel
        evidence = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        fine_evidence = None
        if self.fine_lifting:
            xp = _pad_even(x)
            fine = self.geometry(xp.shape[2:])[views.cpu().numpy()]
            lifted = resample_views(torch.cat([groups["mip"], ones], dim=1) / m, geometry, fine, 2.0)
            fine_evidence = MaxIntensityProjection(fine, self.slabs).lift(lifted, fine_argmax)
            fine_evidence = fine_evidence[(slice(None), slice(None), *(slice(0, n) for n in x.shape[2:]))]
        return core, evidence, fine_evidence

    def forward(self, x: torch.Tensor, views: torch.Tensor | None = None, return_views: bool = False):
        """Path 1 in training mode (random ``train_directions`` views), :meth:`inference_views` in eval mode and
        path 2.

        With ``return_views`` also returns ``(view_logits (B, K, m * slabs, V, U), views)`` for a 2D auxiliary loss.
        """
        if views is None:
            views = self.draw_views() if self.training and not self.unet_frozen else self.inference_views()
        encoded = self.encode(x, views)
        logits = self.decode(x, encoded)
        if return_views:
            return logits, (self._view_logits(encoded), views)
        return logits

    # --- path 2 ---------------------------------------------------------------------------------------------
    def freeze_unet(self, frozen: bool = True) -> "Projection25D":
        """Path 2: the U-Net's weights stop training (and its batch norms stay in eval mode)."""
        self.unet_frozen = frozen
        for p in self.unet.parameters():
            p.requires_grad_(not frozen)
        self.unet.train(self.training and not frozen)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self.unet_frozen:
            self.unet.eval()
        return self

    def project_labels(self, labels: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """2D targets for the auxiliary loss: the MIP of the (one-hot or multi-label) label volume on the core
        grid (max-pooled at ``scale=2``), binarised: a ray counts as foreground where its interpolated maximum
        reaches 0.5 (it passes within about half a voxel of the structure)."""
        labels = labels.float()
        if self.scale == 2:
            labels = self.core_input(labels)[:, labels.shape[1]:]  # the max-pooled half
        geometry = self.geometry(labels.shape[2:])[views.cpu().numpy()]
        projected = MaxIntensityProjection(geometry, self.slabs)(labels)
        return (projected >= 0.5).to(projected.dtype)


@register_model("projection25d")
def projection25d(in_channels: int, out_channels: int, *, preset: str = "default", axes=None, directions=None,
                  train_directions=None, mode=None, features=None, lift=None, filter_init=None,
                  filter_per_view=None, filter_size=None, head=None, head_channels=None, head_layers=None,
                  unet=None, aux_loss=None, scale=None, fine_lift=None, slabs=None,
                  infer_directions=None, sum_input=None) -> Projection25D:
    """The random 2.5D U-Net; ``preset`` is ``"default"`` or ``"paper"`` (the seed's exact configuration).

    Options left as None take the preset's value; ``unet`` options are merged into the preset's. The preset's
    ``features`` grows, where needed, to give each class its own view logit (``features x lifts >= classes``), its
    ``slabs`` fall back to 1 with Radon input or ``fine_lift``, and its ``sum_input`` to False with Radon input.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    options = dict(PRESETS[preset])
    given = dict(axes=axes, directions=directions, train_directions=train_directions, mode=mode, features=features,
                 lift=lift, filter_init=filter_init, filter_per_view=filter_per_view, filter_size=filter_size,
                 head=head, head_channels=head_channels, head_layers=head_layers, aux_loss=aux_loss, scale=scale,
                 fine_lift=fine_lift, slabs=slabs, infer_directions=infer_directions, sum_input=sum_input)
    options.update({k: v for k, v in given.items() if v is not None})
    if features is None and options["features"] is not None and options["lift"]:  # grows to fit the classes
        options["features"] = max(options["features"], -(-out_channels // len(options["lift"])))
    if slabs is None and (options["mode"] != "mip" or options["fine_lift"]):  # slabs are MIP maxima
        options["slabs"] = 1
    if sum_input is None and options["mode"] != "mip":  # Radon views are line sums already
        options["sum_input"] = False
    options["unet"] = {**options["unet"], **(unet or {})}
    model = Projection25D(in_channels, out_channels, **options)
    model.resolved_options = {"preset": preset, **options}
    return model
