"""pyproject.toml lists every package folder, so that a plain ``pip install .`` installs all of them."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
SKIP = {"tests", "docs", "data_manifests", ".venv", "build", "dist"}


def test_every_package_folder_is_listed():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {"seg25d"}
    for init in REPO.rglob("__init__.py"):
        parts = init.parent.relative_to(REPO).parts
        if parts and not (set(parts) & SKIP or any(p.startswith(".") or p.endswith(".egg-info") for p in parts)):
            found.add(".".join(("seg25d", *parts)))
    assert found - {"seg25d.pipeline.presets"} <= listed, sorted(found - listed)
    assert listed - found == {"seg25d.pipeline.presets"}  # data only: its TOML files
