"""One registry for every network: ``build(name, in_channels, out_channels, **options)``."""

from __future__ import annotations

import difflib
import inspect
from typing import Callable

from torch import nn

__all__ = ["register_model", "build", "list_models", "model_options"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Class or factory decorator: make it buildable as ``build(name, ...)``. Names must be unique."""

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
    """The options a model takes beyond its channels (its keyword-only arguments), with their defaults."""
    params = inspect.signature(_factory(name)).parameters
    return {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}


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
    resolved = getattr(model, "resolved_options", None) or {**valid, **options}
    model.config = {"name": name, "in_channels": in_channels, "out_channels": out_channels, "options": resolved}
    return model
