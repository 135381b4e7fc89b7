"""The committed manifests in data_manifests/ are valid wherever their real data is present."""

from __future__ import annotations

from pathlib import Path

import pytest

from seg25d.pipeline.manifest import check_manifest, read_label_spec, read_manifest

MANIFESTS = sorted((Path(__file__).resolve().parents[1] / "data_manifests").glob("*.csv"))


def test_every_manifest_has_a_class_sidecar():
    assert MANIFESTS, "data_manifests/ holds no manifest"
    for manifest in MANIFESTS:
        assert read_label_spec(manifest) is not None, manifest


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.stem)
def test_manifest_checks_clean(manifest):
    frame = read_manifest(manifest)
    if not all(Path(p).exists() for p in frame.image):
        pytest.skip(f"{manifest.name}: the real data is not beside the repository")
    table, problems = check_manifest(manifest)
    assert problems == []
    assert (table.status == "ok").all() and len(table) == len(frame)
