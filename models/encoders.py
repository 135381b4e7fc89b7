"""Pretrained 2D encoders (segmentation-models-pytorch / timm) as U-Net backbones.

``unet2d``, ``slicestack25d`` (through ``backbone_options``) and the 2D U-Net of ``projection25d`` (through its
``unet`` options) take ``encoder="NAME"``: any smp encoder name (``resnet34``, ``efficientnet-b3``, ...) or a
timm one as ``tu-NAME`` (``tu-convnext_tiny``), and ``encoder_weights``:

- ``None`` (``""`` or ``"none"`` in TOML, which has no null): random initialisation;
- a weights name such as ``"imagenet"``: downloaded by smp/timm (Hugging Face hub) and cached;
- a file ``PATH`` (``.pt``/``.pth``/``.bin`` read with ``weights_only=True``, or ``.safetensors``): a state dict
  of the encoder with 3 input channels (``torch.save(smp_model.encoder.state_dict(), PATH)``, a timm model's
  weights for ``tu-`` encoders, or smp's cached ``model.safetensors``), for machines without internet.

Inputs with other than 3 channels (1 for MR, ``k`` slices of a stack, a projection's slab channels) reuse the
pretrained stem as smp does: one channel sums the RGB filters, ``n`` channels cycle through them scaled by
``3 / n``. Checkpoints are self-contained: the resolved config stores ``encoder_weights=None`` because the
weights are in the state dict, so rebuilding a checkpoint never downloads.

The packages are optional: ``pip install seg25d[encoders]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from seg25d.models.blocks import center_crop, channels_last, pad_to_multiple
from seg25d.models.feeding import Feeding
from seg25d.pipeline.errors import InputError

__all__ = ["EncoderUNet", "build_unet2d", "smp_module", "with_encoder", "ENCODER_OPTIONS", "WEIGHT_SUFFIXES"]

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
DECODER_NORMS = {"batch": {"type": "batchnorm"}, "instance": {"type": "instancenorm", "affine": True},  # as UNet's
                 "none": {"type": "identity"}}
DECODER_UPSAMPLING = {"transpose": "nearest", "bilinear": "bilinear"}  # smp upsamples by interpolation
# where each model keeps the options of its 2D U-Net
ENCODER_OPTIONS = {"unet2d": (), "slicestack25d": ("backbone_options",), "projection25d": ("unet",)}


def smp_module():
    """``segmentation_models_pytorch``, imported on first use; InputError in one line when it cannot be."""
    try:
        import segmentation_models_pytorch
    except ImportError as err:
        raise InputError("encoder", f"needs segmentation-models-pytorch and timm, which cannot be imported "
                                    f"({err}): pip install seg25d[encoders]") from None
    return segmentation_models_pytorch


class EncoderUNet(nn.Module):
    """smp's U-Net on a (pretrained) encoder, behind the interface of :class:`~seg25d.models.unet.UNet`.

    Args:
        in_channels, out_channels: input channels and output classes (logits).
        encoder: an smp encoder name, or ``tu-`` + a timm model name.
        encoder_weights: None, a weights name (``"imagenet"``) or a local file (see the module docstring).
        depth: encoder stages (3 to 5); the input is padded to a multiple of ``2**depth`` and cropped back.
        base_channels: decoder channels at full resolution, doubling per level (16 at depth 5 gives smp's
            default ``(256, 128, 64, 32, 16)``).
        norm: the decoder's normalisation, ``"batch"``, ``"instance"`` or ``"none"`` (the encoder keeps its own).
        upsampling: ``"transpose"`` (nearest interpolation: smp's decoder convolves after upsampling) or
            ``"bilinear"``.

    Example:
        >>> net = EncoderUNet(1, 3, "resnet18", depth=3, base_channels=8)  # doctest: +SKIP
        >>> net(torch.zeros(2, 1, 50, 70)).shape  # doctest: +SKIP
        torch.Size([2, 3, 50, 70])
    """

    spatial_dims = 2
    padding = "same"
    feeding = Feeding("slices")  # slice by slice, any slice size

    def __init__(self, in_channels: int, out_channels: int, encoder: str, encoder_weights: str | None = None,
                 depth: int = 5, base_channels: int = 16, norm: str = "batch", upsampling: str = "transpose"):
        super().__init__()
        if not 3 <= depth <= 5:
            raise ValueError(f"depth must be 3, 4 or 5 with an encoder, got {depth}")
        if norm not in DECODER_NORMS:
            raise ValueError(f"norm must be one of {tuple(DECODER_NORMS)}, got {norm!r}")
        if upsampling not in DECODER_UPSAMPLING:
            raise ValueError(f"upsampling must be one of {tuple(DECODER_UPSAMPLING)}, got {upsampling!r}")
        smp = smp_module()
        self.depth, self.encoder_name = depth, encoder
        path = _weights_file(encoder_weights)

        widths = [base_channels * 2**i for i in reversed(range(depth))]

        def unet(channels: int, weights):
            return smp.Unet(encoder, encoder_depth=depth, encoder_weights=weights, in_channels=channels,
                            classes=out_channels, decoder_channels=widths, decoder_use_norm=dict(DECODER_NORMS[norm]),
                            decoder_interpolation=DECODER_UPSAMPLING[upsampling])

        try:
            if path is not None:
                self.net = _with_file_weights(unet, path, in_channels)
            elif encoder_weights is None:
                self.net = unet(in_channels, None)
            else:
                self.net = _downloading(unet, encoder, encoder_weights, in_channels)
        except KeyError as err:  # smp: unknown encoder or weights name (its message lists the valid ones)
            raise ValueError(str(err).strip("'\"")) from None
        self.to(memory_format=torch.channels_last)

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    def freeze_encoder(self, frozen: bool = True) -> "EncoderUNet":
        """Stop (or restart) training the encoder's weights, e.g. for a first epoch on a pretrained encoder."""
        for p in self.net.encoder.parameters():
            p.requires_grad_(not frozen)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, sizes = pad_to_multiple(x, 2**self.depth, 2)
        return center_crop(self.net(channels_last(x)), sizes).contiguous()


def build_unet2d(in_channels: int, out_channels: int, encoder: str | None = None,
                 encoder_weights: str | None = None, **options) -> nn.Module:
    """The 2D U-Net for an options dict: :class:`EncoderUNet` when ``encoder`` is given, else seg25d's UNet.

    With an encoder, ``depth``, ``base_channels``, ``norm`` and ``upsampling`` apply as in :class:`EncoderUNet`;
    ``padding`` must be ``"same"``, ``activation`` ``"relu"`` and ``dropout`` 0 (smp's decoder has no others).
    The returned module's ``resolved_options`` hold the options to rebuild it with ``encoder_weights=None``.
    """
    from seg25d.models.unet import UNet

    if encoder_weights in ("", "none"):  # TOML has no null: --set ...encoder_weights='' for random weights
        encoder_weights = None
    if encoder is None:
        if encoder_weights is not None:
            raise ValueError("encoder_weights needs an encoder (e.g. encoder='resnet34')")
        model = UNet(2, in_channels, out_channels, **options)
        model.resolved_options = {"encoder": None, "encoder_weights": None, **options}
        return model
    fixed = {"padding": "same", "activation": "relu", "dropout": 0.0}
    given = {k: options.pop(k) for k in fixed if k in options}
    wrong = [f"{k}={v!r}" for k, v in given.items() if v != fixed[k]]
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: not available with an encoder (smp's decoder has "
                         f"{', '.join(f'{k}={v!r}' for k, v in fixed.items())})")
    model = EncoderUNet(in_channels, out_channels, encoder, encoder_weights, **options)
    model.resolved_options = {"encoder": encoder, "encoder_weights": None, **options, **fixed}
    return model


def with_encoder(model: str, options: dict, encoder: str, encoder_weights: str | None = None) -> dict:
    """``options`` of ``model`` with its 2D U-Net on ``encoder`` (``encoder_weights=None``: random weights)."""
    if model not in ENCODER_OPTIONS:
        raise ValueError(f"{model} has no 2D U-Net to put an encoder in (one of {', '.join(ENCODER_OPTIONS)})")
    options = dict(options)
    inner = options
    for key in ENCODER_OPTIONS[model]:
        inner[key] = dict(inner.get(key) or {})
        inner = inner[key]
    inner.update(encoder=encoder, encoder_weights=encoder_weights or "")  # "": TOML has no null
    return options


def _weights_file(weights) -> Path | None:
    """``weights`` as a local file, None for a weights name or None; InputError for a missing file."""
    if weights is None or isinstance(weights, bool):
        return None
    text = os.fspath(weights)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if os.sep in text or "/" in text or path.suffix in WEIGHT_SUFFIXES:
        raise InputError(path, "encoder weights file not found")
    return None


def _downloading(unet, encoder: str, weights: str, in_channels: int) -> nn.Module:
    """smp/timm download the weights (or take them from their cache); a failed download is one line."""
    try:
        return unet(in_channels, True if encoder.startswith("tu-") else weights)
    except KeyError:
        raise
    except Exception as err:  # hub/HTTP/OS errors of whichever library downloads
        raise InputError(f"encoder_weights={weights!r}", f"cannot download the weights of encoder {encoder!r} "
                                                         f"({type(err).__name__}); without internet pass a local "
                                                         "file: encoder_weights=PATH, a state dict of the encoder "
                                                         "(torch.save(smp_model.encoder.state_dict(), PATH) on a "
                                                         "machine with internet, or smp's cached model.safetensors)"
                         ) from None


def _read_state(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(path, f"not a readable weights file ({type(err).__name__}: {str(err).splitlines()[0]})"
                         ) from None
    for key in ("state_dict", "model"):  # common wrappers of a plain state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, "not a state dict (a mapping of names to tensors)")
    return state


def _matching(state: dict, expected: dict) -> dict:
    """The file's tensors under the encoder's names: as they are, with timm's ``model.`` prefix (``tu-``
    encoders), or without an smp model's ``encoder.`` prefix; entries the encoder lacks (classifier heads)
    are dropped."""
    candidates = [state, {f"model.{k}": v for k, v in state.items()},
                  {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}]
    best = max(candidates, key=lambda c: len(expected.keys() & c.keys()))
    return {k: v for k, v in best.items() if k in expected}


def _with_file_weights(unet, path: Path, in_channels: int) -> nn.Module:
    """Load a local encoder state dict of 3 input channels and map the stem onto ``in_channels`` as smp does
    (a file whose stem already has ``in_channels`` inputs is loaded as it is)."""
    from segmentation_models_pytorch.encoders._utils import patch_first_conv

    state = _read_state(path)
    for channels in dict.fromkeys((3, in_channels)):
        net = unet(channels, None)
        expected = net.encoder.state_dict()
        found = _matching(state, expected)
        found.update({k: expected[k] for k in expected if k.endswith("num_batches_tracked") and k not in found})
        missing = [k for k in expected if k not in found]
        if missing:
            raise InputError(path, f"not a state dict of encoder {net.encoder.__class__.__name__}: "
                                   f"{len(missing)} of {len(expected)} tensors missing (e.g. {missing[0]!r})")
        if all(found[k].shape == expected[k].shape for k in expected):
            nn.Module.load_state_dict(net.encoder, found)  # the names are the encoder's own already
            if channels != in_channels:
                if hasattr(net.encoder, "set_in_channels"):
                    net.encoder.set_in_channels(in_channels, pretrained=True)
                else:
                    patch_first_conv(net.encoder, in_channels, pretrained=True)
            return net
    bad = next(k for k in expected if found[k].shape != expected[k].shape)
    raise InputError(path, f"tensor {bad!r} has shape {tuple(found[bad].shape)}, the encoder expects "
                           f"{tuple(expected[bad].shape)} (with 3 or {in_channels} input channels)")
