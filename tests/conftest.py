"""Shared fixtures: where the real test data lives, small deterministic helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]


def _find_realdata() -> Path | None:
    candidates = [os.environ.get("SEG25D_REALDATA"), _REPO.parent / "shared" / "realdata"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "README.md").is_file():
            return Path(candidate)
    return None


REALDATA = _find_realdata()


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The read-only real volumes (``../shared/realdata`` or ``$SEG25D_REALDATA``); skips when absent."""
    if REALDATA is None:
        pytest.skip("real test data not found (set SEG25D_REALDATA or place it at ../shared/realdata)")
    return REALDATA


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Each device a test can run on: the CPU always, the GPU when CUDA is available (skipped otherwise)."""
    import torch

    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device(request.param)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny tensors run faster on one thread, and the suite stays steady on a loaded 2-core machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Training runs preprocess into a cache: the suite's goes to a temporary folder, not the user's."""
    previous = os.environ.get("SEG25D_CACHE")
    os.environ["SEG25D_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("SEG25D_CACHE", None)
    else:
        os.environ["SEG25D_CACHE"] = previous
