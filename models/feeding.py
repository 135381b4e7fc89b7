"""How a network is fed: the one thing data loading, training and inference ask a model.

Every registered network declares a :class:`Feeding` as its ``feeding`` attribute (a class attribute, or a
property where it depends on the options). Adding a model is one module with the network and its
``@register_model`` entry; nothing in the pipeline looks at model names or classes.

- ``volume``: whole volumes in training and at inference (``projection25d``).
- ``patches``: 3D networks; whole volumes, or random 3D patches when ``data.patch_size`` is set, and a
  sliding window over volumes too large to predict whole.
- ``slices``: 2D networks, trained on slices along D and run slice by slice (overlap-tile inference for large
  slices or ``padding="valid"``).
- ``stacks``: 2D networks that see ``slices`` neighbouring slices at ``stride`` as channels (``edge`` says what
  lies beyond the first and last slice); they take a whole volume at inference.

``two_paths``: the model trains by the paper's two-path schedule (:mod:`seg25d.pipeline.training`) and provides
``encode``/``decode``, ``inference_views``, ``freeze_unet``/``unet_frozen``, ``aux_loss`` and
``project_labels``.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Feeding", "KINDS", "feeding_of"]

KINDS = ("volume", "patches", "slices", "stacks")


@dataclasses.dataclass(frozen=True)
class Feeding:
    """How a network takes its input (see the module docstring)."""

    kind: str
    slices: int = 1
    stride: int = 1
    edge: str = "clamp"
    padding: str = "same"
    two_paths: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"feeding kind must be one of {KINDS}, got {self.kind!r}")
        if self.padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {self.padding!r}")

    @property
    def three_d(self) -> bool:
        """Whether training batches are volumes or 3D patches (else slices or slice stacks)."""
        return self.kind in ("volume", "patches")


def feeding_of(model) -> Feeding:
    """The model's :class:`Feeding`; TypeError for a network that declares none."""
    feeding = getattr(model, "feeding", None)
    if not isinstance(feeding, Feeding):
        raise TypeError(f"{type(model).__name__} declares no feeding (a seg25d.models.Feeding attribute)")
    return feeding
