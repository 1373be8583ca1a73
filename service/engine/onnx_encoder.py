"""The ONNX Runtime backend: the exported :class:`PrefixedForward` graph behind the Encoder interface.

The prefix bank is a graph input, bound once per bank snapshot through IOBinding as OrtValues on the
session's device (CUDA memory with onnxruntime-gpu), so a forward call moves only the token ids, the
mask, the per-row prefix index and each row's text. The plain backbone is the built-in ``base``
member (length 0, every prefix slot masked) in the same graph.

Shared-trunk prefixes: one graph (and session) per fan-out depth, a new depth exported in the
background while its calls run exactly at a shallower one (``onnx_depths``). On CPU a call that runs
alone uses a second session of the same file with every CPU (the adaptive call plan), opened on the
first lone call of its depth.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from service.engine.backbone import BackboneSpec
from service.engine.bank import PrefixBank
from service.engine.encoder import CallLoop, SlotGroup, TokenizedBatch
from service.engine.onnx_depths import DepthSessions, DepthSet
from service.engine.onnx_export import META_PREFIX, ExportKey, ExportResult
from service.engine.onnx_io import BANK_INPUTS, OUTPUT_NAME, rows_of
from service.engine.ort_fp16 import fp16_session
from service.engine.ort_runtime import (
    active_device,
    cpu_threading,
    disabled_optimizers,
    lone_call_threads,
    release_free_heap,
    requested_providers,
    session_options,
    wants_cuda,
)
from service.engine.tokenize import tokenize
from service.errors import ModelLoadError

# The cached export of a fan-out depth (``ensure_onnx_export`` with the encoder's backbone and pooling,
# quantized for int8).
DepthExporter = Callable[[int], ExportResult]
# dtypes of the ONNX backend per ORT device (float16 is converted in memory, int8 cached as its own file).
ONNX_DTYPES = {"cpu": ("auto", "float32", "int8"), "cuda": ("auto", "float32", "float16")}

log = logging.getLogger(__name__)

# Rows per ORT call on CPU (BENCHMARKS.md, "Request path"): with two calls side by side on one thread each
# (ort_runtime.cpu_threading), 4-row calls served 1-text requests at c=32 at 1.27x and 32-text requests
# at c=4 at 1.20x infinity-emb's ONNX engine, against 1.34x / 1.09x for 2 rows and 1.09x / 1.20x for 8
# (one interleaved run, MiniLM, 2 cores). Small calls also pad each text only to its few neighbours
# in length. The earlier one-call-at-a-time default was 16.
CPU_CHUNK_ROWS = 4


class OnnxEncoder(CallLoop):
    """B texts x P prefixes as one ORT call (or row chunks on CPU), like TorchEncoder.

    ``onnx_path``/``key``: the depth-0 export (the int8 file for ``dtype`` int8). ``exporter``: exports
    deeper fan-out depths on first use, in the background (None: depth 0 only, every prefix runs
    every layer)."""

    backend = "onnx"

    def __init__(
        self,
        onnx_path: Path,
        key: ExportKey,
        spec: BackboneSpec,
        tokenizer: PreTrainedTokenizerBase,
        *,
        default_max_tokens: int,
        device: str = "auto",
        dtype: str = "auto",
        chunk_rows: int | None = None,
        max_input_tokens: int | None = None,
        threads: int | None = None,
        spinning: bool = False,
        parallel_calls: int | None = None,
        exporter: DepthExporter | None = None,
        group_by_depth: bool | None = None,
    ) -> None:
        import onnxruntime as ort

        super().__init__()
        if key.fan_out != 0:
            raise ValueError(f"the first ONNX export must be fan-out depth 0, got {key.fan_out}")
        self.spec = spec
        self.dim = spec.hidden_size
        self.tokenizer = tokenizer
        self.onnx_path = Path(onnx_path)
        self.max_input_tokens = min(max_input_tokens or default_max_tokens, spec.max_text_positions)
        self._requested = requested_providers(device)
        lone_threads = None
        if wants_cuda(self._requested):
            parallel_calls = parallel_calls or 1
        else:
            given = threads
            threads, parallel_calls = cpu_threading(threads, parallel_calls)
            lone_threads = lone_call_threads(threads, given, parallel_calls)
        self.parallel_calls = parallel_calls
        self.intra_op_threads = threads
        self.lone_call_threads = lone_threads
        self._options = session_options(threads, spinning=spinning)
        self._lone_options = (
            None if lone_threads is None else session_options(lone_threads, spinning=spinning)
        )
        self._exporter = exporter
        self.max_fan_out = None if exporter is not None else 0
        if group_by_depth is not None:
            self.group_by_depth = group_by_depth
        session = self._open(self.onnx_path, key)
        self.device, self._ort_device, self._device_id = active_device(session, device, self._requested)
        if dtype not in ONNX_DTYPES[self._ort_device]:
            raise ModelLoadError(
                f"dtype {dtype} is not supported by the onnx backend on {self.device} "
                f"(choose {' | '.join(ONNX_DTYPES[self._ort_device])})"
            )
        self.dtype = "int8" if dtype == "int8" else "float32"
        if (key.dtype == "int8") != (dtype == "int8"):
            raise ModelLoadError(f"{onnx_path} holds a {key.dtype} graph, dtype {dtype} was asked for")
        self._fp16 = self._ort_device == "cuda" and dtype in ("auto", "float16")
        if self._fp16:
            fp16 = fp16_session(self.onnx_path, session, self._options, spec, len(tokenizer))
            if fp16 is not None:
                session, self.dtype = fp16, "float16"
            self._fp16 = fp16 is not None
        if self._ort_device != "cpu":
            self._lone_options = self.lone_call_threads = None
        self.session = session  # depth 0
        first = self._with_lone(self.onnx_path, session, key)
        self._depths = DepthSet(first, self._open_depth if exporter is not None else None)
        self.providers: list[str] | None = list(session.get_providers())
        if chunk_rows is None:
            chunk_rows = CPU_CHUNK_ROWS if self._ort_device == "cpu" else 0
        self.chunk_rows = chunk_rows
        self._bank_version: str | None = None
        self._bank_lock = threading.Lock()
        self._bank_values: dict[str, Any] = {}
        self.bank_uploads = 0  # bank snapshots copied to the device (once per new bank version)
        log.info(
            "ONNX Runtime %s session on %s (%s), providers %s, threads %s (alone: %s), file %s",
            ort.__version__,
            self.device,
            self.dtype,
            self.providers,
            threads or "default",
            lone_threads or "same",
            onnx_path,
        )

    def _open(self, path: Path, key: ExportKey, options: Any = None) -> Any:
        import onnxruntime as ort

        session = ort.InferenceSession(
            str(path),
            options or self._options,
            providers=self._requested,
            disabled_optimizers=disabled_optimizers(self._requested),
        )
        release_free_heap()  # the parsed model and graph rewrites: freed, but still mapped
        stale = key.mismatches(session.get_modelmeta().custom_metadata_map)
        if stale:  # the file was replaced between the cache check and now
            raise ModelLoadError(f"{path} does not match the expected export ({', '.join(stale)})")
        return session

    def _with_lone(self, path: Path, shared: Any, key: ExportKey) -> DepthSessions:
        options = self._lone_options
        if options is None:
            return DepthSessions(path, shared)
        return DepthSessions(path, shared, lambda: self._open(path, key, options))

    def _open_depth(self, fan_out: int) -> DepthSessions:
        assert self._exporter is not None
        result = self._exporter(fan_out)
        session = self._open(result.path, result.key)
        if self._fp16:
            fp16 = fp16_session(result.path, session, self._options, self.spec, len(self.tokenizer), fan_out)
            if fp16 is None:
                raise ModelLoadError(f"float16 graph of fan-out depth {fan_out} failed its check")
            return DepthSessions(result.path, fp16)
        return self._with_lone(result.path, session, result.key)

    def usable_depth(self, depth: int) -> int:
        """``depth`` when its graph is open; else the deepest open depth below it, while ``depth``
        exports in the background (``onnx_depths.DepthSet``)."""
        return self._depths.usable(depth)

    def wait_for_exports(self, timeout: float | None = None) -> None:
        """Block until every background export started so far has landed or failed (warm-up), and
        every lone-call session being opened is open."""
        self._depths.wait(timeout)

    @property
    def exporting(self) -> list[int]:
        """Fan-out depths being exported in the background now."""
        return self._depths.exporting

    @property
    def export_failures(self) -> dict[int, str]:
        return dict(self._depths.failures)

    @property
    def exported_depths(self) -> list[int]:
        return self._depths.depths

    @property
    def lone_session_depths(self) -> list[int]:
        """Fan-out depths whose session for lone calls (every CPU) is open: opened on the first call
        of the depth that ran alone (``onnx_depths.DepthSessions``)."""
        return self._depths.lone_depths

    def tokenize(self, texts: Sequence[str], *, max_length: int, truncate: bool) -> TokenizedBatch:
        return tokenize(self.tokenizer, texts, max_length=max_length, truncate=truncate)

    def _to_device(self, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        import onnxruntime as ort

        return {
            name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), self._ort_device, self._device_id)
            for name, a in arrays.items()
        }

    def _device_bank(self, bank: PrefixBank) -> dict[str, Any]:
        # Uploaded once per bank snapshot (a new version), not once per call; calls may run side by side.
        with self._bank_lock:
            if bank.version != self._bank_version:
                tensors = (bank.keys, bank.values, bank.lengths, bank.shifts, bank.firsts)
                arrays = [t.numpy() for t in tensors]
                self._bank_values = self._to_device(dict(zip(BANK_INPUTS, arrays, strict=True)))
                self._bank_version = bank.version
                self.bank_uploads += 1
            return self._bank_values

    @property
    def bound_bank(self) -> dict[str, Any]:
        """The last bank uploaded, as bound to every call: ORT values on the device, by graph input name."""
        return dict(self._bank_values)

    def _forward(self, part: TokenizedBatch, bank: PrefixBank, group: SlotGroup, alone: bool) -> np.ndarray:
        session = self._depths[group.fan_out].pick(alone)
        values = self._device_bank(bank)
        slots = group.slots
        rows = rows_of(part.size, len(slots))
        binding = session.io_binding()
        binding.bind_cpu_input("input_ids", part.input_ids)
        binding.bind_cpu_input("attention_mask", part.attention_mask)
        binding.bind_cpu_input("prefix_index", np.asarray(slots, dtype=np.int64)[rows["prefix_index"]])
        binding.bind_cpu_input("row_text", rows["row_text"])
        for name, value in values.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_output(OUTPUT_NAME, self._ort_device, self._device_id)
        session.run_with_iobinding(binding)
        out: np.ndarray = binding.copy_outputs_to_cpu()[0]
        return out.astype(np.float32, copy=False).reshape(part.size, len(slots), self.dim)

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "intra_op_threads": self.intra_op_threads or "ORT default (one per physical core)",
            "lone_call_threads": self.lone_call_threads or "same as intra_op_threads",
            "lone_call_sessions": self.lone_session_depths,
            "onnx_files": self._depths.files(),
            "onnx_exporting": self.exporting,
            "onnx_export_failures": {str(d): m for d, m in sorted(self.export_failures.items())},
        }

    @property
    def export_info(self) -> dict[str, str]:
        """The cache key and validation result recorded in the exported file (for /info)."""
        meta = self.session.get_modelmeta().custom_metadata_map
        return {k.removeprefix(META_PREFIX): v for k, v in meta.items() if k.startswith(META_PREFIX)}
