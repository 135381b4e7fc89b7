"""The allocator setting: freed memory is reused without page faults, and a configured environment wins."""

import json
import os
import subprocess
import sys

import pytest

from seg25d.pipeline.allocator import is_glibc, keep_freed_memory
from seg25d.pipeline.memory import MEASURE_ENV

glibc = pytest.mark.skipif(not is_glibc(), reason="glibc's malloc only")

# Allocates and frees arrays of 2 to 19 MiB four times; prints whether the setting was applied and the page
# faults of each round (the kernel zeroes every page it maps in).
PROBE = """
import json, resource
import numpy as np
from seg25d.pipeline.allocator import keep_freed_memory
applied = keep_freed_memory()
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(n) for n in (300_000, 600_000, 1_200_000, 2_400_000, 1_200_000, 600_000)]
    del arrays
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _probe(extra_env: dict) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "SEG25D_KEEP_FREED_MEMORY")}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                          env={**env, **extra_env})
    return json.loads(done.stdout.splitlines()[-1])


@glibc
def test_freed_memory_is_reused_without_page_faults():
    result = _probe({})
    first, later = result["faults"][0], result["faults"][1:]
    assert result["applied"]
    assert first > 2000  # the first round maps in about 30 MiB (7,000+ pages of 4 KiB; fewer with huge pages)
    assert max(later) < 0.02 * first


@glibc
@pytest.mark.parametrize("extra_env", [{"SEG25D_KEEP_FREED_MEMORY": "0"}, MEASURE_ENV,
                                       {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=65536"}])
def test_switched_off_or_configured_allocator_is_left_alone(extra_env):
    # e.g. the memory benchmarks' environment keeps its meaning: freed memory goes back, later rounds fault again
    result = _probe(extra_env)
    assert not result["applied"]
    assert min(result["faults"][1:]) > 0.3 * result["faults"][0]


def test_environment_check_needs_no_glibc():
    assert keep_freed_memory({"SEG25D_KEEP_FREED_MEMORY": "0"}) is False
    assert keep_freed_memory({"MALLOC_TRIM_THRESHOLD_": "1"}) is False
    assert keep_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}) is False


def test_only_the_training_commands_change_the_allocator(monkeypatch, tmp_path):
    from seg25d.pipeline import allocator
    from seg25d.pipeline.cli import main

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda environ=None: calls.append(environ) or True)
    assert main(["manifest", "check", str(tmp_path / "missing.csv")]) != 0
    assert main(["predict", "--model", str(tmp_path / "missing.pt"), "--input", str(tmp_path / "x.nii.gz"),
                 "--out", str(tmp_path / "out")]) != 0
    assert calls == []  # other commands leave glibc as it is
    assert main(["train", "--config", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "run")]) == 2
    assert calls == [None]
