"""The preprocessed-case cache: the same arrays as loading into memory, reuse, rebuilds, atomic writes."""

from __future__ import annotations

import copy
import json
import logging
import os

import numpy as np
import pytest

from seg25d.pipeline import cache as cache_module
from seg25d.pipeline.cache import CacheStats, CachedCase, prepare_data, read_slices
from seg25d.pipeline.cli import main
from seg25d.pipeline.config import DEFAULTS
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.training import _load_data


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from seg25d.pipeline.synth.vessels import write_vessel_dataset

    return write_vessel_dataset(tmp_path_factory.mktemp("vessels"), n=5, shape=(10, 14, 12), seed=0, progress=False)


def _config(manifest, **data) -> dict:
    config = copy.deepcopy(DEFAULTS)
    config["data"].update(manifest=str(manifest), cache="off", **data)
    config["train"]["progress"] = False
    return config


def _prepare(config, root):
    stats = CacheStats()
    task, prep, train, val = prepare_data(config, root, progress=False, stats=stats)
    return prep, train + val, stats


def _same_cases(cached, loaded):
    assert [c.case_id for c in cached] == [c.case_id for c in loaded]
    for a, b in zip(cached, loaded):
        assert np.array_equal(a.image, b.image) and a.image.dtype == b.image.dtype == np.float32
        assert np.array_equal(a.masks, b.masks) and a.masks.dtype == bool
        assert tuple(a.meta.shape) == tuple(b.meta.shape) and np.allclose(a.meta.affine, b.meta.affine)


@pytest.mark.parametrize("normalize", ["case_zscore", "percentile"])
def test_cached_arrays_equal_loading_into_memory(manifest, tmp_path, normalize):
    config = _config(manifest, normalize=normalize, spacing=[1.0, 1.5, 1.5])
    prep, cached, stats = _prepare(config, tmp_path)
    _, prep_ref, _, train, val = _load_data(config, main=False)  # data.cache = "off": today's in-memory loading
    assert prep.to_dict() == prep_ref.to_dict()
    _same_cases(cached, train + val)
    assert stats.built == len(cached) and stats.reused == 0
    assert all(isinstance(c, CachedCase) for c in cached)


def test_arrays_are_memory_mapped_and_never_written_back(manifest, tmp_path):
    _, cached, _ = _prepare(_config(manifest), tmp_path)
    case = cached[0]
    image = case.image
    assert isinstance(image, np.memmap) and image.dtype == np.float32 and image.ndim == 4
    assert isinstance(case.masks, np.memmap) and case.masks.dtype == bool
    before = np.array(image)
    image[:] = 7.0  # copy-on-write: this process's copy only
    assert np.array_equal(case.image, before)


@pytest.mark.parametrize("dtype", [np.float32, bool])
def test_slices_read_at_their_offsets_equal_numpy_indexing(tmp_path, dtype):
    array = (np.random.default_rng(0).random((2, 7, 5, 3)) > 0.5).astype(dtype)
    np.save(tmp_path / "a.npy", array)
    for index in ([0], [6, 2, 2, 0], list(range(7))):
        got = read_slices(tmp_path / "a.npy", index)
        assert got.dtype == array.dtype and np.array_equal(got, array[:, index])
    np.save(tmp_path / "long.npy", np.zeros((1, 40, 5, 3), dtype))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "long.npy").read_bytes()[:-100])
    with pytest.raises(InputError, match="cut short"):
        read_slices(tmp_path / "cut.npy", [39])


def test_second_run_reuses_the_cache(manifest, tmp_path):
    config = _config(manifest)
    _, first, _ = _prepare(config, tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npy")}
    _, second, stats = _prepare(config, tmp_path)
    assert stats.built == 0 and stats.reused == len(first)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npy")} == stamps
    assert [c.image_path for c in second] == [c.image_path for c in first]


@pytest.mark.parametrize("change", [{"spacing": [2.0, 2.0, 2.0]}, {"normalize": "zscore"}])
def test_a_changed_plan_builds_a_new_folder(manifest, tmp_path, change):
    _, first, _ = _prepare(_config(manifest), tmp_path)
    _, second, stats = _prepare(_config(manifest, **change), tmp_path)
    assert stats.built == len(second) and stats.reused == 0
    assert first[0].image_path.parent != second[0].image_path.parent
    assert not np.array_equal(np.asarray(first[0].image).shape, np.asarray(second[0].image).shape) or \
        not np.array_equal(first[0].image, second[0].image)


@pytest.mark.parametrize("spacing", ["auto", [1.0, 1.5, 1.5]])
def test_a_second_run_reads_no_source_file(manifest, tmp_path, monkeypatch, spacing):
    config = _config(manifest, normalize="zscore", spacing=spacing)
    prep, first, _ = _prepare(config, tmp_path)

    def read(*args, **kwargs):
        raise AssertionError("a source file was read again")

    monkeypatch.setattr(cache_module, "load_cases", read)
    monkeypatch.setattr("seg25d.pipeline.images.read_image", read)
    again, cases, stats = _prepare(config, tmp_path)
    assert again.stats == prep.stats and stats.built == 0
    assert [c.image_path for c in cases] == [c.image_path for c in first]


def test_two_datasets_with_the_same_case_ids_do_not_collide(manifest, tmp_path):
    from seg25d.pipeline.synth.vessels import write_vessel_dataset

    other = write_vessel_dataset(tmp_path / "other", n=5, shape=(10, 14, 12), seed=1, progress=False)
    _, a, _ = _prepare(_config(manifest), tmp_path / "cache")
    _, b, _ = _prepare(_config(other), tmp_path / "cache")
    assert a[0].case_id == b[0].case_id and a[0].image_path != b[0].image_path
    _, _, stats = _prepare(_config(manifest), tmp_path / "cache")
    assert stats.built == 0


def _truncate(case):
    path = case.image_path
    path.write_bytes(path.read_bytes()[:200])


def _wrong_shape(case):
    np.save(case.masks_path, np.zeros((1, 2, 3, 4), bool))


def _missing_masks(case):
    case.masks_path.unlink()


def _garbled_index(case):
    case.image_path.with_name(case.image_path.name.replace(".image.npy", ".json")).write_text("{not json")


def _source_touched(case):
    label = case.meta.path.replace("images", "labels")
    os.utime(label, ns=(os.stat(label).st_atime_ns, os.stat(label).st_mtime_ns + 10**9))


@pytest.mark.parametrize("damage", [_truncate, _wrong_shape, _missing_masks, _garbled_index, _source_touched])
def test_a_corrupt_or_stale_entry_is_rebuilt_with_a_warning(manifest, tmp_path, caplog, damage):
    config = _config(manifest)
    _, cached, _ = _prepare(config, tmp_path)
    _, _, _, train, val = _load_data(config, main=False)
    damage(cached[0])
    with caplog.at_level(logging.WARNING, logger="seg25d.pipeline.cache"):
        _, again, stats = _prepare(config, tmp_path)
    assert stats.built == 1 and stats.reused == len(cached) - 1
    assert cached[0].case_id in caplog.text and "rebuilding" in caplog.text
    _same_cases(again, train + val)


def test_a_failed_write_leaves_no_partial_files(manifest, tmp_path, monkeypatch):
    config = _config(manifest)
    real_save = np.save
    calls = []

    def failing_save(path, array):  # the third array fails half-way through writing
        calls.append(path)
        if len(calls) == 3:
            with open(path, "wb") as f:
                f.write(b"\x93NUMPY partial")
            raise OSError("disk full")
        real_save(path, array)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _prepare(config, tmp_path)
    monkeypatch.setattr(np, "save", real_save)
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if ".tmp" in n]
    indexed = [n for n in names if n.endswith(".json") and n != "plan.json"]
    assert len(indexed) == 1  # the first case is complete; the second has no index, so it does not exist
    _, cached, stats = _prepare(config, tmp_path)
    assert stats.built == len(cached) and stats.reused == 0  # the failure hit the unnormalised stage's third array
    _, _, _, train, val = _load_data(config, main=False)
    _same_cases(cached, train + val)


def test_index_records_geometry_and_shapes(manifest, tmp_path):
    _, cached, _ = _prepare(_config(manifest), tmp_path)
    case = cached[0]
    index = json.loads(case.image_path.with_name(case.image_path.name.replace(".image.npy", ".json")).read_text())
    assert index["image"] == {"shape": list(case.image.shape), "dtype": "float32"}
    assert index["masks"] == {"shape": list(case.masks.shape), "dtype": "bool"}
    assert index["meta"]["shape"] == list(case.meta.shape) and len(index["meta"]["affine"]) == 4
    assert index["sources"] and all(os.path.isabs(s[1]) for s in index["sources"])


def test_preprocess_command(manifest, tmp_path, capsys):
    assert main(["preprocess", str(manifest), "--out", str(tmp_path), "--set", "train.progress=false"]) == 0
    assert "written, 0 reused" in capsys.readouterr().out
    assert main(["preprocess", str(manifest), "--out", str(tmp_path), "--set", "train.progress=false"]) == 0
    assert " 0 written" in capsys.readouterr().out
    assert main(["preprocess", str(manifest), "--set", "data.cache=off"]) == 2
    assert "data.cache" in capsys.readouterr().err
