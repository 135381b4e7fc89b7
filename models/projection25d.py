"""The random 2.5D U-Net (Angermann & Haltmeier 2019): project, segment in 2D, lift back to 3D.

``x -> MIP from P views -> shared 2D U-Net -> lift -> head -> logits``. Lifting uses MIP lifting (each view's
output put back at the depth its ray's maximum came from), the filtration F and the backprojection (the Radon
adjoint), slab lifting (each output spread over its band of the ray), or several. With ``slabs`` each view
gives one MIP per band of depth along its rays (thick-slab MIPs), so that structures hidden behind brighter ones
on a ray are seen and lifted; ``projection="mean"`` takes each band's mean intensity instead, where soft tissue
keeps its share; with ``sum_input`` the U-Net also sees each ray's line sum, in which nothing hides a dim
structure. The head is the paper's fine-tuning
operator T (average pooling, learnable affine normalisation, sigmoid in the loss) or a light
full-resolution head that also sees the input volume.

With ``scale=2`` all of this runs on a half-resolution grid (the input average- and max-pooled by 2), and
a full-resolution refinement sees the upsampled logits together with the input: the 3D work and memory
drop about eightfold and the 2D work fourfold (like a 3D U-Net whose first layer strides).

The U-Net sees each image cropped to the volume's shadow on the detector (the detector is as wide as the
largest diagonal, which oblique views need and axis-aligned ones do not). Under ``torch.autocast`` (the
trainer's ``train.precision = "bf16"``) the networks run in bf16 and the projections and lifting in fp32.

Training follows the paper's two paths: path 1 draws ``train_directions`` of the views at random each
forward and trains everything end to end; path 2 runs every view through a frozen U-Net
(:meth:`Projection25D.freeze_unet`; :meth:`~Projection25D.encode` gives the U-Net outputs as
:class:`Encoded`, which a trainer may cache per volume, and :meth:`~Projection25D.decode` the logits) and
trains only F, the head and the refinement.

Every option is a field of :class:`Projection25DOptions`; :data:`PRESETS` holds the ``default`` and
``paper`` sets.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from seg25d.models.feeding import Feeding
from seg25d.models.registry import register_model
from seg25d.models.encoders import build_unet2d
from seg25d.projections import (
    MaxIntensityProjection, RayBackprojection, RayTransform, SlabMeanProjection, multi_axis_geometry,
)
from seg25d.reconstruction import Filtration, FineTuning, local_mean

__all__ = ["Projection25D", "Projection25DOptions", "Encoded", "VolumeHead", "Refinement", "PRESETS",
           "resolve_scale", "AUTO_SCALE_VOXELS", "OUTSIDE_LOGIT", "FILTER_INIT"]

#: ``scale="auto"`` works on the input grid up to this many voxels and at half resolution above
AUTO_SCALE_VOXELS = 1_500_000
#: the views' 2D logits where a ray misses the volume (not segmented; their features are 0): certain background
OUTSIDE_LOGIT = -1e4
#: the volume head recomputes its activations in the backward pass above this many voxels
CHECKPOINT_VOXELS = 1_000_000

#: the filtration F starts as the paper's ramp filter
FILTER_INIT = "ramp"
LIFTS = ("backproject", "mip", "slab")
PROJECTIONS = ("max", "mean")


@dataclasses.dataclass(frozen=True)
class Projection25DOptions:
    """Every option of ``projection25d``; the field defaults are the ``default`` preset.

    Attributes:
        axes: rotation axes of the views (0 = D as in the paper; ``(0, 1, 2)`` resolves in-plane curves).
        directions: views per axis, evenly spread over 180 degrees; inference and path 2 use all of them.
        train_directions: views drawn at random per training forward (path 1), spread over the axes.
        features: channels per view and lift kind (None: one per output channel); the first ``K`` of all are
            the views' 2D segmentation logits (auxiliary loss).
        lift: some of ``"backproject"``, ``"mip"`` (needs ``projection="max"``) and ``"slab"`` (each image's
            features spread evenly over its band of the ray); each lifts its own ``features`` channels.
        filter_per_view: one filtration kernel per view (else one shared); F starts as the ramp filter.
        filter_size: length of the filtration kernel.
        head: ``"paper"`` (T: average pooling, affine, sigmoid) or ``"volume"`` (:class:`VolumeHead`, sees the
            input).
        head_channels: width of the volume head.
        unet: options of the shared 2D :class:`~seg25d.models.unet.UNet`.
        aux_loss: whether training adds a 2D loss of the views' logits against the projected labels.
        scale: 1 works on the input grid; 2 on a half-resolution grid (the input average- and max-pooled),
            followed by :class:`Refinement` at full resolution; ``"auto"`` is resolved from the training
            volumes' size with :func:`resolve_scale` before building (the trainer does).
        slabs: each view gives ``slabs`` images (one per band of depth along its rays), each segmented by the
            U-Net and MIP- or slab-lifted on its own band; backprojection lifts each view's mean over its slabs.
        projection: the images: ``"max"`` (slab MIPs) or ``"mean"`` (slab means, :class:`SlabMeanProjection`).
        sum_input: each image goes to the U-Net with a second channel per image channel, its rays' line sums
            (the Radon transform, standardised per image), the same for all slabs of a view.
        spacing: voxel size ``(D, H, W)`` of the working grid in mm, so that views are taken in physical space
            (only the ratios matter; the trainer sets the planned spacing); None: cubic voxels.
    """

    axes: tuple[int, ...] = (0, 1, 2)
    directions: int = 8
    train_directions: int = 3
    features: int | None = 2
    lift: tuple[str, ...] = ("mip",)
    filter_per_view: bool = False
    filter_size: int = 63
    head: str = "volume"
    head_channels: int = 8
    unet: dict = dataclasses.field(default_factory=lambda: {"depth": 4, "base_channels": 16, "norm": "instance"})
    aux_loss: bool = True
    scale: int | str = 1
    slabs: int = 3
    projection: str = "max"
    sum_input: bool = True
    spacing: tuple[float, float, float] | None = None

    def __post_init__(self):
        object.__setattr__(self, "axes", tuple(int(a) for a in self.axes))  # TOML gives lists
        object.__setattr__(self, "lift", tuple(self.lift))
        object.__setattr__(self, "unet", dict(self.unet))
        if not self.axes or any(a not in (0, 1, 2) for a in self.axes) or len(set(self.axes)) != len(self.axes):
            raise ValueError(f"axes must be distinct values among 0, 1, 2, got {self.axes}")
        if not self.lift or any(k not in LIFTS for k in self.lift):
            raise ValueError(f"lift must be a non-empty subset of {LIFTS}, got {self.lift}")
        if not 1 <= self.train_directions <= self.directions * len(self.axes):
            raise ValueError(f"train_directions must be in [1, {self.directions * len(self.axes)}], "
                             f"got {self.train_directions}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {self.projection!r}")
        if self.projection == "mean" and "mip" in self.lift:
            raise ValueError("MIP lifting puts features at each ray's maximum: it needs projection='max'")
        if int(self.slabs) < 1:
            raise ValueError(f"slabs must be at least 1, got {self.slabs}")
        if self.head not in ("paper", "volume"):
            raise ValueError(f"head must be 'paper' or 'volume', got {self.head!r}")
        if self.scale == "auto":
            raise ValueError("scale='auto' is resolved from the volume size before building: "
                             "scale=seg25d.models.projection25d.resolve_scale('auto', shape)")
        if self.scale not in (1, 2):
            raise ValueError(f"scale must be 1, 2 or 'auto', got {self.scale!r}")


PRESETS: dict[str, Projection25DOptions] = {
    # Three rotation axes, three slab MIPs per view each with its rays' line sums, two feature channels per view
    # MIP-lifted, instance norms in the U-Net, a head that sees the input volume and a 2D auxiliary loss.
    "default": Projection25DOptions(),
    # The paper's configuration: one rotation axis, MIP, one channel per class, F (ramp) + backprojection, T.
    "paper": Projection25DOptions(axes=(0,), directions=32, train_directions=8, features=None,
                                  lift=("backproject",), filter_per_view=True, head="paper",
                                  unet={"depth": 4, "base_channels": 16}, aux_loss=False, slabs=1,
                                  sum_input=False),
}


class Encoded(NamedTuple):
    """What :meth:`Projection25D.encode` gives :meth:`Projection25D.decode`."""

    features: torch.Tensor  #: the U-Net's outputs per image ``(B, F, m * slabs, V, U)``
    argmax: object  #: where each ray's maximum lies, for MIP lifting (opaque; None without it)
    views: torch.Tensor  #: the views' indices
    core: torch.Tensor  #: :meth:`Projection25D.core_input` of the volume


class VolumeHead(nn.Module):
    """A light full-resolution head: pointwise mixing of the input and the lifted evidence, one 3x3x3
    convolution of ``channels`` channels, then per-class logits.

    On volumes of more than :data:`CHECKPOINT_VOXELS` voxels its activations are recomputed in the backward
    pass instead of stored (activation checkpointing), so its memory is that of its input and output, a few
    volume-sized tensors; on smaller ones the recomputation would cost a fifth of the head's time for memory
    nobody needs.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: int = 8):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(in_channels, channels, 1), nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(channels, channels, 3, padding=1), nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(channels, out_channels, 1),
        ).to(memory_format=torch.channels_last_3d)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last_3d: oneDNN's fast path for these norm-free convolutions
        return self.net(x.contiguous(memory_format=torch.channels_last_3d)).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad and x[0, 0].numel() > CHECKPOINT_VOXELS:
            return checkpoint(self._run, x, use_reentrant=False)
        return self._run(x)


def resolve_scale(scale, shape) -> int:
    """A concrete scale for volumes of ``shape``: ``"auto"`` is 1 up to :data:`AUTO_SCALE_VOXELS` voxels
    (small volumes: full-resolution lifting and head are more accurate) and 2 above (the 3D work and memory
    drop eightfold)."""
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
    neighbours), several times faster than ``avg_pool3d`` and ``max_pool3d`` on the CPU."""
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
    Faster than ``interpolate`` forward and backward, whose CPU backward is slow."""
    for dim in (2, 3, 4):
        n = x.shape[dim]
        padded = torch.cat([x.narrow(dim, 0, 1), x, x.narrow(dim, n - 1, 1)], dim=dim)
        before, after = padded.narrow(dim, 0, n), padded.narrow(dim, 2, n)
        x = torch.stack([torch.lerp(x, before, 0.25), torch.lerp(x, after, 0.25)], dim=dim + 1).flatten(dim, dim + 1)
    return x


class Refinement(nn.Module):
    """Full-resolution refinement at ``scale=2``: upsample the half-resolution logits (trilinear) and add a
    learned per-voxel combination of the input and its local contrast (``x`` minus its 3x3x3 mean).

    One linear 1x1x1 layer, started at zero: training starts from the plain upsampled logits, and the
    full-resolution memory stays at a few single-channel volumes (a hidden layer would cost more time and
    memory than the whole half-resolution network).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_channels, 2 * in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        up = _upsample2(logits)[(slice(None), slice(None), *(slice(0, n) for n in x.shape[2:]))]
        detail = x - local_mean(x, 3)
        features = [x, detail]
        # the 1x1x1 layer written out: a Conv3d with so few channels pads them to 16 in oneDNN's blocked
        # layout, costing time and memory for what is a few multiply-adds per voxel
        out = up + self.bias.view(1, -1, 1, 1, 1)
        channels = [channel for feature in features for channel in feature.unbind(1)]
        for c, channel in enumerate(channels):
            out = out + self.weight[:, c].view(1, -1, 1, 1, 1) * channel.unsqueeze(1)
        return out


class Projection25D(nn.Module):
    """The random 2.5D U-Net; input ``(B, C, D, H, W)``, output logits ``(B, K, D, H, W)``.

    ``options`` (:class:`Projection25DOptions`) say everything else; ``in_channels`` are the image channels and
    ``out_channels`` the classes ``K``.
    """

    feeding = Feeding("volume", two_paths=True)

    def __init__(self, in_channels: int, out_channels: int, options: Projection25DOptions | None = None):
        super().__init__()
        options = options or Projection25DOptions()
        features = options.features or out_channels
        lift = options.lift
        if features * len(lift) < out_channels:
            raise ValueError(f"features x lifts ({features} x {len(lift)}) must be >= out_channels ({out_channels}): "
                             "the first out_channels view channels are the views' 2D logits")
        self.options = options
        spacing = np.asarray((1.0, 1.0, 1.0) if options.spacing is None else options.spacing, dtype=float)
        if spacing.shape != (3,) or not (spacing > 0).all():
            raise ValueError(f"spacing must be three positive sizes (D, H, W) in mm, got {options.spacing}")
        self.voxel = tuple(float(v) for v in spacing / spacing.min())  # the finest axis is one unit
        self.axes, self.directions, self.train_directions = options.axes, options.directions, options.train_directions
        self.features, self.lift_kinds, self.aux_loss = features, lift, options.aux_loss
        self.out_channels, self.scale, self.slabs = out_channels, options.scale, int(options.slabs)
        self.projection = options.projection
        core_channels = in_channels * (2 if self.scale == 2 else 1)  # average- and max-pooled at scale 2
        self.sum_input = bool(options.sum_input)
        self.unet = build_unet2d(core_channels * (1 + self.sum_input), features * len(lift), **options.unet)
        n_views = self.directions * len(self.axes)
        self.filtration = Filtration(kernel_size=options.filter_size,
                                     views=n_views if options.filter_per_view else 1, channels=features,
                                     init=FILTER_INIT) if "backproject" in lift else None
        evidence = features * len(lift) + ("mip" in lift)
        if options.head == "paper":
            if evidence != out_channels:
                raise ValueError("the paper head (T) needs one lifted channel per class: features=out_channels "
                                 "and lift=('backproject',)")
            self.head = FineTuning(out_channels)
        else:
            self.head = VolumeHead(core_channels + evidence, out_channels, options.head_channels)
        self.head_kind = options.head
        self.refinement = Refinement(in_channels, out_channels) if self.scale == 2 else None
        self.unet_frozen = False
        self._geometries: dict[tuple, object] = {}

    # --- geometry -------------------------------------------------------------------------------------------
    def geometry(self, shape):
        """All ``P`` views for a volume shape (cached)."""
        shape = tuple(int(s) for s in shape)
        if shape not in self._geometries:
            self._geometries[shape] = multi_axis_geometry(shape, {a: self.directions for a in self.axes}, self.voxel)
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
        """The views of inference and path 2: all of them."""
        return self.all_views()

    # --- the two halves -------------------------------------------------------------------------------------
    def core_input(self, x: torch.Tensor) -> torch.Tensor:
        """The grid the projections and the lifting work on: ``x``, or at ``scale=2`` its 2x average and max
        pools (sizes padded to even by repeating the last voxel)."""
        if self.scale == 1:
            return x
        mean, peak = _pool2(_pad_even(x))
        return torch.cat([mean, peak], dim=1)

    def encode(self, x: torch.Tensor, views: torch.Tensor) -> Encoded:
        """Project onto ``views`` and run the 2D U-Net."""
        with torch.autocast(x.device.type, enabled=False):  # geometry in full precision, also under autocast
            core = self.core_input(x.float())
            images, argmax, geometry = self._project(core, views)
        return Encoded(self._segment(images, geometry), argmax, views, core)

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

    def _view_logits(self, encoded: Encoded) -> torch.Tensor:
        """The views' 2D logits ``(B, K, m * slabs, V, U)``, :data:`OUTSIDE_LOGIT` outside their shadows."""
        logits = encoded.features[:, : self.out_channels]
        inside = torch.zeros(logits.shape[2:], dtype=torch.bool, device=logits.device)
        geometry = self.geometry(encoded.core.shape[2:])[encoded.views.cpu().numpy()]
        for i, (r0, r1, c0, c1) in enumerate(self._shadows(geometry)):
            inside[i, r0:r1, c0:c1] = True
        return torch.where(inside, logits, OUTSIDE_LOGIT)

    def _project(self, core: torch.Tensor, views: torch.Tensor) -> tuple:
        """The U-Net's input images ``(B, C, m * slabs, V, U)``, the MIP argmax (for MIP lifting) and the views'
        geometry on the core grid."""
        geometry = self.geometry(core.shape[2:])[views.cpu().numpy()]
        argmax = None
        mip = MaxIntensityProjection(geometry, self.slabs)
        if self.projection == "mean":
            images = SlabMeanProjection(geometry, self.slabs)(core)
        elif "mip" in self.lift_kinds and core.shape[1] == 1:
            images, argmax = mip.with_argmax(core)
        else:
            images = mip(core)
        if "mip" in self.lift_kinds and argmax is None:
            # MIP lifting needs one maximum per ray: that of the channel mean for multi-channel input
            _, argmax = mip.with_argmax(core.mean(dim=1, keepdim=True))
        if self.sum_input:
            sums = RayTransform(geometry)(core)
            std, mean = torch.std_mean(sums, dim=(3, 4), keepdim=True)
            sums = (sums - mean) / std.clamp_min(1e-6)
            images = torch.cat([images, sums.repeat_interleave(self.slabs, dim=2)], dim=1)
        return images, argmax, geometry

    def decode(self, x: torch.Tensor, encoded: Encoded) -> torch.Tensor:
        """Lift the views' features back to the volume, apply the head (and refinement): logits ``(B, K, D, H, W)``."""
        with torch.autocast(x.device.type, enabled=False):  # geometry in full precision, also under autocast
            evidence = self._lift(encoded)
        core = encoded.core
        logits = self.head(evidence) if self.head_kind == "paper" else self.head(torch.cat([core, evidence], dim=1))
        if self.refinement is not None:
            logits = self.refinement(logits, x)
        return logits

    def _lift(self, encoded: Encoded) -> torch.Tensor:
        """The lifted evidence on the core grid."""
        features, argmax, views, core = encoded
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
        if "slab" in groups:
            parts.append(SlabMeanProjection(geometry, self.slabs).lift(groups["slab"] / m))
        if "mip" in groups:
            mip = MaxIntensityProjection(geometry, self.slabs)
            ones = torch.ones_like(groups["mip"][:, :1])
            parts.append(mip.lift(torch.cat([groups["mip"], ones], dim=1) / m, argmax))  # last: maxima per voxel
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def forward(self, x: torch.Tensor, views: torch.Tensor | None = None, return_views: bool = False):
        """Path 1 in training mode (random ``train_directions`` views), every view in eval mode and path 2.

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
def projection25d(in_channels: int, out_channels: int, *, preset: str = "default", **options) -> Projection25D:
    """The random 2.5D U-Net; ``preset`` is ``"default"`` or ``"paper"`` (the paper's configuration).

    ``options`` are fields of :class:`Projection25DOptions`; those left out or None take the preset's value, and
    ``unet`` options are merged into the preset's. The preset's ``features`` grows, where needed, to give each
    class its own view logit (``features x lifts >= classes``).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    base = PRESETS[preset]
    given = {k: v for k, v in options.items() if v is not None}
    if "unet" in given:
        given["unet"] = {**base.unet, **given["unet"]}
    resolved = dataclasses.replace(base, **given)
    if "features" not in given and resolved.features is not None:  # grows to fit the classes
        resolved = dataclasses.replace(resolved, features=max(resolved.features, -(-out_channels // len(resolved.lift))))
    model = Projection25D(in_channels, out_channels, resolved)
    unet = {**resolved.unet, "encoder_weights": None} if resolved.unet.get("encoder") else resolved.unet
    model.resolved_options = {"preset": preset, **dataclasses.asdict(resolved), "unet": unet}  # weights: state dict
    return model


projection25d.options = Projection25DOptions  # the options it takes as **options (see models.registry)
