"""ONNX Runtime plumbing: which distribution is installed, which providers to ask for, session options.

``onnxruntime`` and ``onnxruntime-gpu`` install into the same ``onnxruntime`` folder (the last one
installed silently wins), so an environment must hold exactly one of them. What really runs is
``session.get_providers()``: ``get_available_providers()`` lists CUDA on any onnxruntime-gpu install,
GPU or not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from collections.abc import Callable
from importlib import metadata
from typing import Any

# torch before onnxruntime: a CUDA build of torch loads the CUDA 13 / cuDNN 9 libraries (pip's nvidia-*
# wheels) that onnxruntime-gpu's CUDA provider links against; the CUDA base image has no cuDNN of its own.
import torch  # noqa: F401

from service.errors import ModelLoadError

log = logging.getLogger(__name__)

ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


def installed_ort_distributions() -> list[str]:
    """The ONNX Runtime distributions installed in this environment (by package metadata)."""
    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return found


def check_ort_install() -> list[str]:
    """Warn when both distributions are installed (one silently overwrote the other's files)."""
    found = installed_ort_distributions()
    if not found:
        raise ModelLoadError(
            "backend 'onnx' needs ONNX Runtime: install the cpu extra (onnxruntime) "
            "or the gpu extra (onnxruntime-gpu), not both"
        )
    if len(found) > 1:
        log.warning(
            "both %s are installed; they share one `onnxruntime` folder and the last one installed "
            "silently won. Uninstall both and install exactly one (extra `cpu` or `gpu`).",
            " and ".join(found),
        )
    return found


def requested_providers(device: str) -> list[Any]:
    """Providers to ask for: CUDA (with CPU fallback) for ``auto`` when this build has it, or ``cuda[:N]``."""
    import onnxruntime as ort

    if device == "cpu":
        return [CPU_PROVIDER]
    if device == "auto" and CUDA_PROVIDER not in ort.get_available_providers():
        return [CPU_PROVIDER]
    if device not in ("auto", "cuda") and not device.startswith("cuda:"):
        raise ModelLoadError(
            f"device {device!r} is not supported by the onnx backend (auto | cpu | cuda[:N])"
        )
    device_id = int(device.split(":", 1)[1]) if ":" in device else 0
    return [(CUDA_PROVIDER, {"device_id": device_id}), CPU_PROVIDER]


# Fusions that make this graph slower on the CPU provider, measured on MiniLM (BENCHMARKS.md, "Request
# path"): ORT's CPU SkipLayerNormalization kernel took ~1 ms per call where the LayerNormalization + Add
# it replaces took ~0.15 ms, so disabling the fusion gave +7 % texts/s on the whole forward.
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
CPU_PARALLEL_CALLS = 2


def wants_cuda(requested: list[Any]) -> bool:
    return any((p[0] if isinstance(p, tuple) else p) == CUDA_PROVIDER for p in requested)


def disabled_optimizers(requested: list[Any]) -> list[str]:
    """Graph optimizers to turn off for a session asking for ``requested`` providers: the CPU-only
    list when CUDA is not among them (the CUDA kernels are untouched)."""
    return [] if wants_cuda(requested) else list(CPU_DISABLED_OPTIMIZERS)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cpu_threading(threads: int | None, parallel_calls: int | None) -> tuple[int | None, int]:
    """(intra-op threads, parallel calls) of a CPU session. Defaults: 2 calls side by side, each with
    an equal share of the CPUs (1 thread each on 2 CPUs), measured fastest at every load shape on
    2 cores (BENCHMARKS.md, "Request path"). An explicit value wins."""
    calls = CPU_PARALLEL_CALLS if parallel_calls is None else parallel_calls
    if threads is None and calls > 1:
        threads = max(1, available_cpus() // calls)
    return threads, calls


def lone_call_threads(threads: int | None, given: int | None, calls: int) -> int | None:
    """Intra-op threads of a call that runs alone (the adaptive plan), or None for a fixed plan.

    Calls side by side share the CPUs (``threads`` each); a call with nothing beside it (one text at
    c = 1, the last chunk of a batch) would leave the others idle, so it runs on a second session with
    every CPU. Only when the threads were not ``given`` explicitly and sharing left CPUs unused by a
    lone call (BENCHMARKS.md, "Request path": 1.2-1.3x at one text per request on 2 cores)."""
    cpus = available_cpus()
    if given is not None or calls <= 1 or threads is None or cpus <= threads:
        return None
    return cpus


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:  # pragma: no cover - no C library to load
        return None


def release_free_heap() -> bool:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``; False where there is none).

    Opening a session parses the model and rewrites its graph; glibc keeps the freed temporaries
    mapped (free pages below a live chunk are not trimmed on their own): ~90 MB per session of float32
    MiniLM, measured in BENCHMARKS.md ("Memory" of issue 27). Called after each session is opened."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def session_options(threads: int | None = None, *, spinning: bool = False) -> Any:
    """Session options. Spinning is off by default: on a shared CPU, busy-waiting intra-op threads
    steal cores from the tokenizer, the event loop and other processes (measured in BENCHMARKS.md)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise
    return so


def active_device(session: Any, device: str, requested: list[Any]) -> tuple[str, str, int]:
    """(device string, ORT device type, device id) of what ``session`` really runs on.

    An explicit ``cuda`` request that ended on the CPU provider is an error; with ``auto`` it is a
    logged fallback (onnxruntime-gpu on a machine without a GPU or without CUDA 13 / cuDNN 9)."""
    providers = session.get_providers()
    if providers and providers[0] == CUDA_PROVIDER:
        options = session.get_provider_options().get(CUDA_PROVIDER, {})
        device_id = int(options.get("device_id", 0))
        return f"cuda:{device_id}", "cuda", device_id
    if device.startswith("cuda"):
        raise ModelLoadError(
            f"device {device!r} requested but ONNX Runtime runs on {providers}: "
            "install onnxruntime-gpu (gpu extra) with CUDA 13 and cuDNN 9, or use device auto/cpu"
        )
    if any(isinstance(p, tuple) and p[0] == CUDA_PROVIDER for p in requested):
        log.warning("ONNX Runtime could not start the CUDA provider; running on %s", providers)
    return "cpu", "cpu", 0
