"""Output places: ids as plain file names, paths kept inside their folder, output folders checked up front."""

from __future__ import annotations

import os

import pytest

from seg25d.pipeline.errors import InputError
from seg25d.pipeline.outputs import check_out_dir, inside, make_out_dir, name_problem, safe_name


@pytest.mark.parametrize("name, problem", [
    ("", "is empty"),
    ("../evil", "holds a path separator (/ or \\)"),
    ("/etc/passwd", "holds a path separator (/ or \\)"),
    ("a\\b", "holds a path separator (/ or \\)"),
    (".", "is '.' or '..'"),
    ("..", "is '.' or '..'"),
    ("a\nb", "holds a control character"),
    ("a\x00b", "holds a control character"),
    ("a\x7fb", "holds a control character"),
    ("x" * 201, "is longer than 200 bytes"),
    ("é" * 101, "is longer than 200 bytes"),  # 202 bytes in UTF-8
])
def test_names_that_are_not_plain_file_names(name, problem):
    assert name_problem(name) == problem
    with pytest.raises(InputError) as excinfo:
        safe_name(name, "m.csv", "line 2: case_id")
    assert str(excinfo.value).startswith(f"m.csv: line 2: case_id {name!r} {problem}")
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize("name", ["case_001", "a b", "...x", "x..", "É-ü", "x" * 200, "é" * 100, "liver.v2"])
def test_plain_names_pass(name):
    assert name_problem(name) is None and safe_name(name, "m.csv") == name


def test_inside_keeps_paths_in_their_folder(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    os.symlink(tmp_path, out / "link_up")
    assert inside(out, "a.nii.gz") == out / "a.nii.gz"
    assert inside(out, "sub/a.nii.gz") == out / "sub" / "a.nii.gz"
    assert inside(out, "link_up") == out / "link_up"  # a link as the last part: writes replace the link itself
    for name in ("../a", "/etc/passwd", "sub/../../a", ".", "link_up/a"):
        with pytest.raises(InputError, match="is not inside the folder"):
            inside(out, name)


def test_check_out_dir_finds_unusable_folders_without_creating_them(tmp_path):
    (tmp_path / "file").write_text("x")
    assert check_out_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()
    with pytest.raises(InputError, match=r"file: --out is a file, not a folder$"):
        check_out_dir(tmp_path / "file")
    with pytest.raises(InputError, match=r"--out cannot be created: .*file is a file, not a folder$"):
        check_out_dir(tmp_path / "file" / "a" / "b")
    assert make_out_dir(tmp_path / "new" / "deeper").is_dir()
