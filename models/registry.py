"""One registry for every network: ``build(name, in_channels, out_channels, **options)``."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Callable

from torch import nn

from seg25d.models.feeding import feeding_of

__all__ = ["register_model", "build", "list_models", "model_options"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Class or factory decorator: make it buildable as ``build(name, ...)``. Names must be unique.

    The network it builds declares a :class:`~seg25d.models.feeding.Feeding` as ``feeding``.
    """

    def wrap(factory):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def _factory(name: str):
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; available: {', '.join(list_models())}")
    return _REGISTRY[name]


def model_options(name: str) -> dict[str, object]:
    """The options a model takes beyond its channels, with their defaults: the factory's keyword-only arguments,
    and the fields of the dataclass in its ``options`` attribute when it takes them as ``**options`` (None: the
    factory picks the value, e.g. from a preset)."""
    factory = _factory(name)
    params = inspect.signature(factory).parameters
    found = {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}
    declared = getattr(factory, "options", None)
    if declared is not None:
        found.update({field.name: None for field in dataclasses.fields(declared)})
    return found


def build(name: str, in_channels: int, out_channels: int, **options) -> nn.Module:
    """Build a registered network; unknown names or options raise ValueError listing what exists.

    The module remembers its construction in ``model.config`` (name, channels and every option resolved,
    defaults and presets included), so a checkpoint rebuilds the same network even if defaults change.

    Example:
        >>> net = build("unet2d", 1, 2, depth=3, base_channels=8)
        >>> net.config["name"], net.config["options"]["depth"]
        ('unet2d', 3)
    """
    factory = _factory(name)
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for model {name!r}; "
                         f"valid: {', '.join(f'{k}={v!r}' for k, v in valid.items())}")
    model = factory(in_channels, out_channels, **options)
    feeding_of(model)  # every network says how it is fed
    resolved = getattr(model, "resolved_options", None) or {**valid, **options}
    model.config = {"name": name, "in_channels": in_channels, "out_channels": out_channels, "options": resolved}
    return model
