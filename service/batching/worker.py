"""The two threads behind the batcher: a tokenizer stage and one inference worker per encoder.

Tokenization of new requests overlaps the forward pass of the current batch (the tokenizer and
torch both release the GIL). Only the inference thread touches the model; only the tokenizer
thread touches the tokenizer. A failing batch fails its own requests and the threads keep going.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence

import numpy as np

from service.batching.planner import PlannedBatch, SlotPolicy, plan_batch
from service.batching.request import EmbedJob, EmbedOutput
from service.batching.stats import BatcherObserver, BatchRecord
from service.batching.tokenizing import TokenizerStage
from service.engine.encoder import Encoder, ForwardCall
from service.errors import DeadlineExceeded, InferenceFailed, NotReady

log = logging.getLogger(__name__)


class BatchWorker:
    """``submit(request)`` from the event loop; results arrive through ``request.resolve``."""

    def __init__(
        self,
        encoder: Encoder,
        observers: Sequence[BatcherObserver],
        *,
        max_batch_tokens: int,
        slot_policy: SlotPolicy,
        max_input_chars: int | None = None,
    ) -> None:
        self.encoder = encoder
        self.observers = observers
        self.max_batch_tokens = max_batch_tokens
        self.slot_policy: SlotPolicy = slot_policy
        self._tok_queue: queue.SimpleQueue[EmbedJob | None] = queue.SimpleQueue()
        self._tokenizer = TokenizerStage(
            encoder, self._tok_queue, self._emit, max_input_chars=max_input_chars
        )
        self.max_input_chars = self._tokenizer.max_input_chars  # the cap in force (default resolved)
        self._ready: deque[EmbedJob] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        # Forward calls of the batch being run, reported by the encoder's observer (this worker's
        # while it runs: one worker per encoder).
        self._calls = 0
        self._call_tokens = 0

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            return
        self.encoder.set_observer(self._on_forward_call)
        for name, target in (("tokenizer", self._tokenizer.run), ("infer", self._infer_loop)):
            t = threading.Thread(target=target, name=f"prefix-embed-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def submit(self, req: EmbedJob) -> None:
        self._tok_queue.put(req)

    def waiting_texts(self) -> int:
        """Texts tokenized and waiting for the inference thread (of live requests), read under its lock."""
        with self._cond:
            return sum(r.size - r.next_text for r in self._ready if r.live)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` has told the inference thread to take no further batch."""
        return self._stopping

    def stop(self, timeout: float | None = None) -> int:
        """Stop both threads after the batch in progress; fail whatever is still queued.

        Returns how many queued requests were failed (the batcher reports them as ``shutdown``)."""
        if self._threads:
            self._tok_queue.put(None)
            self._threads[0].join(timeout)
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            self._threads[1].join(timeout)
        with self._cond:
            leftovers, self._ready = list(self._ready), deque()
        while True:
            try:
                item = self._tok_queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                leftovers.append(item)
        # never started and still wanted (a request whose texts all ran is answered, not dropped)
        failed = sum(1 for req in leftovers if req.live and req.next_text < req.size)
        for req in leftovers:
            req.fail(NotReady("the server is shutting down; retry on another replica"))
        self.encoder.set_observer(None)
        return failed

    # --- tokenizer stage (service/batching/tokenizing.py) --------------------------------------
    def _emit(self, tokenized: list[EmbedJob]) -> None:
        with self._cond:
            self._ready.extend(tokenized)
            self._cond.notify()

    # --- inference worker --------------------------------------------------------------------
    def _infer_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:  # stop() fails what is left
                        return
                    self._purge(time.monotonic())
                    batch = plan_batch(self._ready, max_tokens=self.max_batch_tokens, policy=self.slot_policy)
                    if batch is not None:
                        break
                    self._cond.wait()
            try:
                self._run(batch)
            except Exception:  # never let a bug end the worker: fail the batch, keep serving
                log.exception("batch bookkeeping failed")
                for req in batch.requests:
                    req.fail(InferenceFailed("the batch failed; see the server log"))

    def _purge(self, now: float) -> None:
        keep: deque[EmbedJob] = deque()
        for req in self._ready:
            if not req.live or req.next_text >= req.size:
                continue  # cancelled / failed, or every text already handed to a batch
            if req.expired(now):
                req.fail(DeadlineExceeded("request waited past its deadline in the queue"))
                continue
            keep.append(req)
        self._ready = keep

    def _on_forward_call(self, call: ForwardCall) -> None:
        """The encoder's observer: count the call and tell the batcher's observers."""
        self._calls += 1
        self._call_tokens += call.tokens
        for obs in self.observers:
            obs.on_forward(call)

    def _run(self, batch: PlannedBatch) -> None:
        """Run a planned batch (sorted by length) as encoder calls of one row chunk each, answering
        every request as soon as its last text is done rather than when the whole batch is."""
        start = time.monotonic()
        for req in batch.requests:
            if req.started_at is None:
                req.started_at = start
                for obs in self.observers:
                    obs.on_queued(start - req.enqueued_at)
        # parts of one model call each (the encoder decides), padded once below
        per_call = max(1, self.encoder.texts_per_call(len(batch.items), batch.bank, batch.slots))
        for first in range(0, len(batch.items), per_call):
            part = PlannedBatch(batch.bank, batch.slots, batch.items[first : first + per_call])
            part.items = [(r, i) for r, i in part.items if r.live]
            if part.items:
                self._run_call(part, start)

    def _run_call(self, batch: PlannedBatch, start: float) -> None:
        requests = batch.requests
        tokens = batch.tokenized(self.encoder.spec.pad_token_id)
        self._calls = self._call_tokens = 0
        t0 = time.perf_counter()
        try:
            vectors = self.encoder.encode(tokens, batch.bank, batch.slots)
        except Exception:
            log.exception("encoder call failed (%d requests, %d rows)", len(requests), batch.rows)
            for req in requests:
                req.fail(InferenceFailed("inference failed for this batch; see the server log"))
            for obs in self.observers:
                obs.on_batch_failed(len(requests))
            return
        seconds = time.perf_counter() - t0
        record = BatchRecord(
            requests=len(requests),
            texts=len(batch.items),
            rows=batch.rows,
            forward_calls=self._calls,
            padded_tokens=self._call_tokens,
            real_tokens=batch.real_tokens(),
            queue_seconds=start - min(r.enqueued_at for r in requests),
            inference_seconds=seconds,
        )
        for obs in self.observers:
            obs.on_batch(record)
        self._scatter(batch, vectors)

    @staticmethod
    def _scatter(batch: PlannedBatch, vectors: np.ndarray) -> None:
        column = {s: j for j, s in enumerate(batch.slots)}
        for row, (req, i) in enumerate(batch.items):
            if not req.live:
                continue
            if req.vectors is None:
                req.vectors = np.empty((req.size, len(req.slots), vectors.shape[2]), dtype=np.float32)
            if req.slots == batch.slots:
                req.vectors[i] = vectors[row]
            else:  # union policy: this request asked for a subset of the batch's slots
                req.vectors[i] = vectors[row, [column[s] for s in req.slots]]
            req.done_texts += 1
        for req in batch.requests:
            if req.live and req.done_texts == req.size and req.vectors is not None:
                req.resolve(EmbedOutput(req.vectors, tuple(len(ids) for ids in req.token_ids)))
