"""Atomic writes: the target appears complete or not at all, with no temporary files left behind."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pandas as pd
import pytest

from seg25d.pipeline.atomic import (_create_temp_sibling, atomic_path, full_suffix, remove_stale_temporaries,
                                    write_csv, write_json, write_text)
from seg25d.pipeline.errors import InputError


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a.nii.gz", ".nii.gz"),
        ("dir/b.nrrd", ".nrrd"),
        ("c.NII.GZ", ".NII.GZ"),
        ("archive.tar.gz", ".tar.gz"),
        ("d.gz", ".gz"),
        ("e.final.nii", ".nii"),
        ("case.001.nii.gz", ".nii.gz"),
        ("noext", ""),
        ("x.mha", ".mha"),
    ],
)
def test_full_suffix(name, expected):
    assert full_suffix(name) == expected


def test_atomic_path_success_renames_temp_onto_target(tmp_path):
    target = tmp_path / "sub" / "deeper" / "out.nii.gz"  # parent folders are created
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp != target
        assert tmp.name.startswith(".") and tmp.name.endswith(".tmp.nii.gz")  # backends pick the format by suffix
        assert tmp.exists() and not target.exists()
        tmp.write_bytes(b"payload")
    assert target.read_bytes() == b"payload"
    assert [p.name for p in target.parent.iterdir()] == ["out.nii.gz"]


def test_atomic_path_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_failure_keeps_previous_version(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.write_text("new but broken")
            raise KeyError("x")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_replaces_existing_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_written_file_has_ordinary_permissions(tmp_path):
    """The result must be as readable as a file written with open() (mkstemp's 0600 would leak through)."""
    reference = tmp_path / "reference.txt"
    with open(reference, "w") as f:
        f.write("x")
    target = tmp_path / "atomic.txt"
    write_text(target, "x")
    assert stat.S_IMODE(os.stat(target).st_mode) == stat.S_IMODE(os.stat(reference).st_mode)


def test_write_json_nan_becomes_null(tmp_path):
    target = tmp_path / "metrics.json"
    obj = {"dice": float("nan"), "per_case": [1.0, np.float64("nan"), {"hd95": math.nan}], "pair": (0.5, float("nan")),
           "name": "case1"}
    write_json(target, obj)
    text = target.read_text()
    assert "NaN" not in text

    def reject(constant):  # strict JSON: NaN/Infinity are not allowed
        raise ValueError(constant)

    loaded = json.loads(text, parse_constant=reject)
    assert loaded == {"dice": None, "per_case": [1.0, None, {"hd95": None}], "pair": [0.5, None], "name": "case1"}


def test_write_csv_round_trip(tmp_path):
    frame = pd.DataFrame({"case_id": ["a", "b"], "dice": [0.5, 0.25]})
    target = tmp_path / "table.csv"
    write_csv(target, frame)
    assert target.read_text().splitlines()[0] == "case_id,dice"  # no index column
    pd.testing.assert_frame_equal(pd.read_csv(target), frame)
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_stale_temporaries_of_one_target_are_removed(tmp_path):
    """What a killed atomic write of c1.nii.gz left (a hidden temporary file; a detached-header folder) goes;
    other targets' temporaries and look-alikes stay."""
    target = tmp_path / "c1.nii.gz"
    stale = [tmp_path / ".c1.0123abcd.tmp.nii.gz", tmp_path / ".c1.nii.gz.k2j_9xq1.tmp"]
    stale[0].write_bytes(b"half")
    (stale[1] / "inner").mkdir(parents=True)
    others = [tmp_path / ".c10.0123abcd.tmp.nii.gz", tmp_path / ".c1.0123abcd.tmp.nrrd", tmp_path / ".c1.notes",
              tmp_path / ".c1.0123abcd.tmp.nii.gz.bak", tmp_path / "c1.0123abcd.tmp.nii.gz"]
    for path in others:
        path.write_text("keep")
    assert sorted(remove_stale_temporaries(target)) == sorted(stale)
    assert not any(p.exists() for p in stale) and all(p.read_text() == "keep" for p in others)
    assert remove_stale_temporaries(tmp_path / "absent" / "x.nii.gz") == []
    made = _create_temp_sibling(target)  # the temporaries atomic_path makes are the ones it removes
    assert remove_stale_temporaries(target) == [made] and not made.exists()


def test_atomic_path_refuses_a_folder_or_a_file_in_the_way(tmp_path):
    (tmp_path / "taken.csv").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="taken.csv: output name exists as a folder"):
        write_text(tmp_path / "taken.csv", "a")
    with pytest.raises(InputError, match="a file stands where its folder should be"):
        write_text(tmp_path / "file" / "sub" / "x.csv", "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "taken.csv"]
