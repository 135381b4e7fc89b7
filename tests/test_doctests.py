"""Run the examples in the docstrings of the projection, reconstruction, atomic-write and device modules."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "seg25d.projections",
    "seg25d.projections.geometry",
    "seg25d.projections.operators",
    "seg25d.reconstruction.backprojection",
    "seg25d.pipeline.atomic",
    "seg25d.pipeline.device",
]


@pytest.mark.filterwarnings("ignore:Sparse:UserWarning")
@pytest.mark.parametrize("name", MODULES)
def test_module_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.attempted >= 1, f"{name} has no docstring examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see output)"
