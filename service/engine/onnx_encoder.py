"""The ONNX Runtime backend: the exported :class:`PrefixedForward` graph behind the Encoder interface.

The prefix bank is a graph input, bound once per bank snapshot through IOBinding as OrtValues on the
session's device (CUDA memory with onnxruntime-gpu), so a forward call moves only the token ids, the
mask and the per-row prefix index. ``encode_plain`` runs the same graph with a one-slot, zero-length
bank (every prefix slot masked), which is the plain backbone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from service.engine.backbone import BackboneSpec
from service.engine.bank import PrefixBank
from service.engine.encoder import TokenizedBatch, call_chunks
from service.engine.onnx_export import META_PREFIX, ExportKey
from service.engine.onnx_io import BANK_INPUTS, OUTPUT_NAME, plain_bank
from service.engine.ort_fp16 import fp16_session
from service.engine.ort_runtime import active_device, requested_providers, session_options
from service.engine.tokenize import tokenize
from service.engine.torch_encoder import ForwardObserver
from service.errors import ModelLoadError

log = logging.getLogger(__name__)

# Rows per ORT call on CPU, measured on MiniLM, B=32 texts x P=8 prefixes, Lp=16 (BENCHMARKS.md). Texts
# sorted by length on a worker thread, as the batcher runs them: 8, 16 and 32 rows are equal within
# noise (2.65-2.68 s per encode), 64 rows slower (3.18 s), one call slowest. Unsorted texts (direct
# encoder use) favour small chunks, each padded to its own longest text: 2.07 / 2.55 / 3.21 / 4.45 CPU s
# for 8 / 16 / 32 / all rows. 16 keeps most of that without making the batcher's calls tiny.
CPU_CHUNK_ROWS = 16


class OnnxEncoder:
    """B texts x P prefixes as B*P rows of one ORT call (or row chunks on CPU), like TorchEncoder."""

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
    ) -> None:
        import onnxruntime as ort

        self.spec = spec
        self.dim = spec.hidden_size
        self.tokenizer = tokenizer
        self.onnx_path = Path(onnx_path)
        self.max_input_tokens = min(max_input_tokens or default_max_tokens, spec.max_text_positions)
        options = session_options(threads)
        requested = requested_providers(device)
        session = ort.InferenceSession(str(onnx_path), options, providers=requested)
        found = session.get_modelmeta().custom_metadata_map
        stale = key.mismatches(found)
        if stale:  # the file was replaced between the cache check and now
            raise ModelLoadError(f"{onnx_path} does not match the expected export ({', '.join(stale)})")
        self.device, self._ort_device, self._device_id = active_device(session, device, requested)
        self.dtype = "float32"
        if self._ort_device == "cuda" and dtype in ("auto", "float16"):
            fp16 = fp16_session(onnx_path, session, options, spec, len(tokenizer))
            if fp16 is not None:
                session, self.dtype = fp16, "float16"
        elif dtype not in ("auto", "float32"):
            raise ModelLoadError(
                f"dtype {dtype} is not supported by the onnx backend on {self.device} "
                "(float32; float16 on CUDA only)"
            )
        self.session = session
        self.providers: list[str] = list(session.get_providers())
        if chunk_rows is None:
            chunk_rows = CPU_CHUNK_ROWS if self._ort_device == "cpu" else 0
        self.chunk_rows = chunk_rows
        self.forward_calls = 0
        self.on_forward: ForwardObserver | None = None
        self._bank_version: str | None = None
        self._bank_values: dict[str, Any] = {}
        self._plain_values = self._to_device(plain_bank(spec))
        log.info(
            "ONNX Runtime %s session on %s (%s), providers %s, file %s",
            ort.__version__,
            self.device,
            self.dtype,
            self.providers,
            onnx_path,
        )

    def tokenize(self, texts: Sequence[str], *, max_length: int, truncate: bool) -> TokenizedBatch:
        return tokenize(self.tokenizer, texts, max_length=max_length, truncate=truncate)

    def _to_device(self, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        import onnxruntime as ort

        return {
            name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), self._ort_device, self._device_id)
            for name, a in arrays.items()
        }

    def _device_bank(self, bank: PrefixBank) -> dict[str, Any]:
        # Uploaded once per bank snapshot (a new version), not once per call.
        if bank.version != self._bank_version:
            arrays = (bank.keys.numpy(), bank.values.numpy(), bank.lengths.numpy(), bank.shifts.numpy())
            self._bank_values = self._to_device(dict(zip(BANK_INPUTS, arrays, strict=True)))
            self._bank_version = bank.version
        return self._bank_values

    def _call(
        self, batch: TokenizedBatch, bank: dict[str, Any], slots: Sequence[int], extra: int
    ) -> np.ndarray:
        reps = max(1, len(slots))
        ids = np.repeat(batch.input_ids, reps, axis=0)
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", np.repeat(batch.attention_mask, reps, axis=0))
        index = np.tile(np.asarray(slots if slots else [0], dtype=np.int64), batch.size)
        binding.bind_cpu_input("prefix_index", index)
        for name, value in bank.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_output(OUTPUT_NAME, self._ort_device, self._device_id)
        start = time.perf_counter()
        self.session.run_with_iobinding(binding)
        out: np.ndarray = binding.copy_outputs_to_cpu()[0]
        self.forward_calls += 1
        if self.on_forward is not None:
            rows = ids.shape[0]
            self.on_forward(rows, rows * (ids.shape[1] + extra), time.perf_counter() - start)
        return out

    def _run(
        self, batch: TokenizedBatch, bank: dict[str, Any], slots: Sequence[int], extra: int
    ) -> np.ndarray:
        outs = [
            self._call(part, bank, slots, extra) for part in call_chunks(batch, self.chunk_rows, len(slots))
        ]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def encode(self, batch: TokenizedBatch, bank: PrefixBank, slots: Sequence[int]) -> np.ndarray:
        if not slots:
            return np.zeros((batch.size, 0, self.dim), dtype=np.float32)
        extra = int(bank.keys.shape[3])
        flat = self._run(batch, self._device_bank(bank), slots, extra)
        return flat.reshape(batch.size, len(slots), self.dim)

    def encode_plain(self, batch: TokenizedBatch) -> np.ndarray:
        return self._run(batch, self._plain_values, (), 0)

    @property
    def export_info(self) -> dict[str, str]:
        """The cache key and validation result recorded in the exported file (for /info)."""
        meta = self.session.get_modelmeta().custom_metadata_map
        return {k.removeprefix(META_PREFIX): v for k, v in meta.items() if k.startswith(META_PREFIX)}
