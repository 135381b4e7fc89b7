"""Where and in which precision the networks run: one device switch, one precision rule, for every command.

``resolve_device("auto")`` is the GPU when ``torch.cuda.is_available()`` (under torchrun, ``cuda:LOCAL_RANK``),
else the CPU. ``resolve_precision(precision, device)`` turns ``"auto"`` into what the device computes fast:
bf16 autocast on GPUs that support it, else fp16 autocast with a gradient scaler; on the CPU bf16 where the CPU
computes it natively, else fp32. ``"fp32"`` forces full precision everywhere. Weights, optimiser states and
losses stay fp32 in every mode; :func:`autocast` runs the forward pass in the resolved precision and
:func:`grad_scaler` scales fp16 gradients (a no-op otherwise).

Example:
    >>> device = resolve_device("cpu")
    >>> precision = resolve_precision("fp32", device)
    >>> with autocast(device, precision):
    ...     y = torch.ones(2, device=device) * 2
    >>> y.dtype, peak_memory(device), distributed_backend(device)
    (torch.float32, None, 'gloo')
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping

import torch

from seg25d.pipeline.errors import InputError

__all__ = ["DEVICES", "PRECISIONS", "resolve_device", "resolve_precision", "autocast", "grad_scaler", "to_device",
           "peak_memory_reset", "peak_memory", "synchronize", "distributed_backend", "local_device_for_rank",
           "describe_device", "set_deterministic", "module_device"]

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def local_device_for_rank() -> torch.device:
    """The GPU of this process under torchrun (``cuda:LOCAL_RANK``) when CUDA is available, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    return _cuda(rank, f"LOCAL_RANK={rank}")


def _cuda(index: int, what: str) -> torch.device:
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise InputError("device", f"{what} names GPU {index}, but this machine has {count} "
                                   f"(cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The device for ``--device`` / ``train.device``: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    ``"auto"`` is the GPU when CUDA is available, else the CPU; ``"auto"`` and ``"cuda"`` take the process's own
    GPU under torchrun (``cuda:LOCAL_RANK``). Raises :class:`InputError` (one line) for CUDA on a machine without
    it, a GPU index out of range or an unknown name.
    """
    name = str(device).strip().lower()
    if name == "auto":
        return local_device_for_rank()
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError("device", f"{name!r} asked for, but no CUDA GPU is available here "
                                       "(use --device cpu or auto)")
        if name == "cuda":
            return local_device_for_rank()
        index = name.partition(":")[2]
        if not index.isdigit():
            raise InputError("device", f"must be one of {', '.join(DEVICES)}, got {device!r}")
        return _cuda(int(index), name)
    raise InputError("device", f"must be one of {', '.join(DEVICES)}, got {device!r}")


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"`` for ``train.precision`` / ``--precision`` on ``device``.

    CPU: ``"auto"`` is bf16 on CPUs with native bf16 instructions (faster steps there) and fp32 elsewhere,
    where bf16 is emulated; fp16 is refused. CUDA: ``"auto"`` is bf16 on GPUs that support
    it (``torch.cuda.is_bf16_supported()``), else fp16 with a gradient scaler (:func:`grad_scaler`).
    """
    if precision not in PRECISIONS:
        raise InputError("train.precision", f"must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if precision == "auto":
            return "bf16" if bf16 else "fp16"
        if precision == "bf16" and not bf16:
            raise InputError("train.precision", f"bf16 is not supported by {describe_device(device)}; "
                                                "use auto or fp16")
        return precision
    if precision == "fp16":
        raise InputError("train.precision", "fp16 runs on CUDA GPUs only; on the CPU use auto, bf16 or fp32")
    if precision != "auto":
        return precision
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private torch.cpu helpers: may go away
    return "bf16" if any(getattr(torch.cpu, name, lambda: False)() for name in checks) else "fp32"


def autocast(device: str | torch.device, precision: str):
    """Autocast context for a resolved ``precision`` on ``device`` (disabled for fp32)."""
    device = torch.device(device)
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def grad_scaler(device: str | torch.device, precision: str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 on CUDA (bf16 and fp32 keep fp32's exponent range)."""
    device = torch.device(device)
    return torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and precision == "fp16")


def to_device(batch, device: str | torch.device):
    """``batch`` (a tensor, or dicts, lists and tuples of them; anything else passes) on ``device``.

    CPU tensors bound for a GPU are copied from pinned memory with ``non_blocking=True``, so the copy overlaps
    the work already queued on the GPU.
    """
    device = torch.device(device)
    if isinstance(batch, torch.Tensor):
        if batch.device == device:
            return batch
        if device.type == "cuda" and batch.device.type == "cpu":
            return batch.pin_memory().to(device, non_blocking=True)
        return batch.to(device)
    if isinstance(batch, Mapping):
        return type(batch)((k, to_device(v, device)) for k, v in batch.items())
    if isinstance(batch, (list, tuple)):
        items = [to_device(v, device) for v in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)
    return batch


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's parameters (or buffers); the CPU for a module that holds neither."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def peak_memory_reset(device: str | torch.device) -> None:
    """Start a new peak-memory measurement on a GPU (nothing on the CPU, where :class:`PeakMemory` measures)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: str | torch.device) -> float | None:
    """Peak GPU memory allocated by tensors since :func:`peak_memory_reset`, in MiB; None on the CPU (callers
    keep the resident-memory probe of :mod:`seg25d.pipeline.memory` there)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def synchronize(device: str | torch.device) -> None:
    """Wait for the work queued on a GPU (call before reading a clock: CUDA kernels run asynchronously)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def distributed_backend(device: str | torch.device) -> str:
    """The ``torch.distributed`` backend for ranks on ``device``: NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def describe_device(device: str | torch.device) -> str:
    """One line naming the device, for logs and ``run.json``: ``"cuda:0 (NVIDIA H100 80GB HBM3)"``, ``"cpu"``."""
    device = torch.device(device)
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def set_deterministic(enabled: bool) -> None:
    """Deterministic algorithms on or off (``train.deterministic``): on CUDA slower (no cuDNN autotuning, ordered
    scatter-adds), bit-identical reruns; on the CPU the kernels used here are deterministic either way."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it before its first call
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    if enabled:
        torch.backends.cudnn.benchmark = False

