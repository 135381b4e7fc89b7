"""Device and precision resolution: the CUDA rules with CUDA faked (``torch.cuda`` monkeypatched), the CPU rules
as they are, and the helpers on each available device."""

from __future__ import annotations

import collections
import warnings

import pytest
import torch

from seg25d.pipeline import device as dev
from seg25d.pipeline.errors import InputError


@pytest.fixture
def fake_cuda(monkeypatch):
    """A machine with ``count`` GPUs (default 2) named "Fake GPU", bf16 support as set."""

    def install(count=2, bf16=True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Fake GPU")
        monkeypatch.delenv("LOCAL_RANK", raising=False)

    return install


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


# --- devices -----------------------------------------------------------------------------------------------------

def test_auto_is_the_cpu_without_cuda(no_cuda):
    assert dev.resolve_device("auto") == torch.device("cpu")
    assert dev.resolve_device("cpu") == torch.device("cpu")
    assert dev.resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert dev.local_device_for_rank() == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_cuda_is_one_clear_line(no_cuda, name):
    with pytest.raises(InputError) as err:
        dev.resolve_device(name)
    assert "no CUDA GPU is available" in _one_line(err) and "--device cpu" in str(err.value)


def test_auto_and_cuda_take_the_first_gpu_or_the_rank_s_own(fake_cuda, monkeypatch):
    fake_cuda(count=4)
    assert dev.resolve_device("auto") == torch.device("cuda", 0)
    assert dev.resolve_device("cuda") == torch.device("cuda", 0)
    assert dev.resolve_device("cuda:3") == torch.device("cuda", 3)
    assert dev.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "2")  # under torchrun
    assert dev.resolve_device("auto") == dev.resolve_device("cuda") == dev.local_device_for_rank()
    assert dev.local_device_for_rank() == torch.device("cuda", 2)
    assert dev.resolve_device("cuda:1") == torch.device("cuda", 1)  # an explicit index wins


def test_gpu_index_out_of_range(fake_cuda, monkeypatch):
    fake_cuda(count=2)
    with pytest.raises(InputError) as err:
        dev.resolve_device("cuda:2")
    assert "this machine has 2" in _one_line(err) and "cuda:0 to cuda:1" in str(err.value)
    monkeypatch.setenv("LOCAL_RANK", "3")  # more processes than GPUs
    with pytest.raises(InputError, match="LOCAL_RANK=3"):
        dev.resolve_device("auto")


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:one", "mps", ""])
def test_unknown_device_names_list_the_valid_ones(fake_cuda, name):
    fake_cuda()
    with pytest.raises(InputError) as err:
        dev.resolve_device(name)
    assert "auto, cpu, cuda, cuda:N" in _one_line(err)


def test_describe_device(fake_cuda):
    fake_cuda()
    assert dev.describe_device("cpu") == "cpu"
    assert dev.describe_device("cuda:1") == "cuda:1 (Fake GPU)"


def test_distributed_backend():
    assert dev.distributed_backend("cpu") == "gloo"
    assert dev.distributed_backend(torch.device("cuda", 1)) == "nccl"


# --- precision ---------------------------------------------------------------------------------------------------

def test_cpu_auto_precision_is_bf16_only_on_cpus_that_have_it(monkeypatch):
    for avx512_bf16, amx, expected in [(True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        assert dev.resolve_precision("auto") == dev.resolve_precision("auto", "cpu") == expected
        assert dev.resolve_precision("fp32", "cpu") == "fp32" and dev.resolve_precision("bf16", "cpu") == "bf16"


def test_fp16_on_the_cpu_and_unknown_precisions_are_refused():
    with pytest.raises(InputError) as err:
        dev.resolve_precision("fp16", "cpu")
    assert "CUDA" in _one_line(err)
    with pytest.raises(InputError) as err:
        dev.resolve_precision("half", "cpu")
    assert _one_line(err).startswith("train.precision: must be one of")


def test_cuda_auto_precision_is_bf16_where_supported_else_fp16(fake_cuda, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)  # the CPU rule differs
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    cuda = torch.device("cuda", 0)
    fake_cuda(bf16=True)
    assert [dev.resolve_precision(p, cuda) for p in ("auto", "bf16", "fp16", "fp32")] == ["bf16", "bf16", "fp16",
                                                                                          "fp32"]
    fake_cuda(bf16=False)
    assert [dev.resolve_precision(p, cuda) for p in ("auto", "fp16", "fp32")] == ["fp16", "fp16", "fp32"]
    with pytest.raises(InputError) as err:
        dev.resolve_precision("bf16", cuda)
    assert "Fake GPU" in _one_line(err)
    assert dev.resolve_precision("auto", "cpu") == "fp32"


def test_grad_scaler_only_for_fp16_on_cuda(fake_cuda):
    fake_cuda()
    assert dev.grad_scaler("cuda:0", "fp16").is_enabled()
    assert not dev.grad_scaler("cuda:0", "bf16").is_enabled()
    assert not dev.grad_scaler("cuda:0", "fp32").is_enabled()
    assert not dev.grad_scaler("cpu", "bf16").is_enabled()


def test_autocast_dtypes():
    a, b = torch.ones(4, 4), torch.ones(4, 4)
    with dev.autocast("cpu", "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with dev.autocast("cpu", "fp32"):
        assert (a @ b).dtype == torch.float32
    with warnings.catch_warnings():  # without CUDA, torch warns and disables a CUDA autocast
        warnings.simplefilter("ignore", UserWarning)
        ctx = dev.autocast(torch.device("cuda", 0), "fp16")
    assert (ctx.device, ctx.fast_dtype) == ("cuda", torch.float16)


# --- helpers on each device --------------------------------------------------------------------------------------

Pair = collections.namedtuple("Pair", "image mask")


def test_to_device_moves_every_tensor_and_keeps_the_structure(device):
    batch = {"x": torch.arange(6.0).view(2, 3), "rest": [Pair(torch.ones(2), torch.zeros(2, dtype=torch.bool)), 3],
             "name": "case_1", "t": (torch.tensor(5),)}
    moved = dev.to_device(batch, device)
    assert moved.keys() == batch.keys() and moved["name"] == "case_1" and moved["rest"][1] == 3
    assert isinstance(moved["rest"][0], Pair) and isinstance(moved["t"], tuple)
    tensors = [moved["x"], moved["rest"][0].image, moved["rest"][0].mask, moved["t"][0]]
    assert all(t.device.type == device.type for t in tensors)
    torch.testing.assert_close(moved["x"].cpu(), batch["x"], rtol=0, atol=0)
    assert moved["rest"][0].mask.dtype == torch.bool
    if device.type == "cpu":
        assert moved["x"] is batch["x"]  # nothing copied


def test_peak_memory(device):
    dev.peak_memory_reset(device)
    if device.type == "cpu":
        assert dev.peak_memory(device) is None
        return
    x = torch.empty(64, 2**20, dtype=torch.uint8, device=device)  # 64 MiB
    assert dev.peak_memory(device) >= 64
    del x
    dev.peak_memory_reset(device)
    assert dev.peak_memory(device) < 64


def test_set_deterministic_switches_and_restores():
    before = torch.are_deterministic_algorithms_enabled()
    try:
        dev.set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
        dev.set_deterministic(False)
        assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    finally:
        dev.set_deterministic(before)
