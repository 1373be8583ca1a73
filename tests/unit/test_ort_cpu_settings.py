"""The ONNX Runtime CPU defaults as rules (service/engine/ort_runtime.py): which fusions are off,
how the CPUs are shared among side-by-side calls. Their speed is in BENCHMARKS.md, not here."""

from __future__ import annotations

import pytest

from service.engine import ort_runtime
from service.engine.ort_runtime import (
    CPU_DISABLED_OPTIMIZERS,
    CPU_PROVIDER,
    CUDA_PROVIDER,
    cpu_threading,
    disabled_optimizers,
    wants_cuda,
)


def test_skip_layer_norm_fusion_is_off_on_cpu_only() -> None:
    assert "SkipLayerNormFusion" in CPU_DISABLED_OPTIMIZERS
    assert disabled_optimizers([CPU_PROVIDER]) == list(CPU_DISABLED_OPTIMIZERS)
    cuda = [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER]
    assert wants_cuda(cuda)
    assert not wants_cuda([CPU_PROVIDER])
    assert disabled_optimizers(cuda) == []


@pytest.mark.parametrize(
    ("cpus", "threads", "calls", "expected"),
    [
        (2, None, None, (1, 2)),  # the default on 2 CPUs: two calls, one thread each
        (16, None, None, (8, 2)),
        (1, None, None, (1, 2)),  # never 0 threads
        (16, None, 4, (4, 4)),
        (16, 3, None, (3, 2)),  # explicit threads win
        (16, None, 1, (None, 1)),  # one call at a time: ORT's own default
    ],
)
def test_cpu_threading_shares_the_cpus_among_the_calls(
    monkeypatch: pytest.MonkeyPatch,
    cpus: int,
    threads: int | None,
    calls: int | None,
    expected: tuple[int | None, int],
) -> None:
    monkeypatch.setattr(ort_runtime, "available_cpus", lambda: cpus)
    assert cpu_threading(threads, calls) == expected
