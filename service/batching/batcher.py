"""The asyncio face of the batcher: admit (or refuse), enqueue, await with a deadline, drain.

The HTTP layer only validates, calls :meth:`Batcher.embed` and awaits. Nothing here blocks the
event loop: the request goes to the tokenizer thread through a lock-free queue and its result
comes back through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from service.batching.planner import SlotPolicy
from service.batching.request import EmbedJob, EmbedOutput
from service.batching.stats import BatcherObserver, BatcherStats
from service.batching.worker import BatchWorker
from service.engine.bank import PrefixBank
from service.engine.encoder import Encoder
from service.errors import DeadlineExceeded, NotReady, QueueFull

if TYPE_CHECKING:
    from service.config import Settings


class Batcher:
    """``await embed(texts, bank, slots)`` -> vectors of every text under every slot, one snapshot.

    Concurrent calls are coalesced into encoder calls of at most ``max_batch_tokens`` (rows x padded
    length, prefix included). At most ``max_queue`` requests are admitted at once (more: 429
    :class:`QueueFull` with ``retry_after``); inputs longer than ``max_input_chars`` characters
    (None: 32 x the encoder's token limit) are cut or refused before tokenizing; each has ``timeout_s`` from admission to its result
    (:class:`DeadlineExceeded`, 504). Cancelling the awaiting task drops its queued work.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        max_queue: int = 1024,
        timeout_s: float = 30.0,
        max_batch_tokens: int = 32768,
        slot_policy: SlotPolicy = "group",
        max_input_chars: int | None = None,
    ) -> None:
        self.encoder = encoder
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.max_batch_tokens = max_batch_tokens
        self.stats = BatcherStats()
        self.observers: list[BatcherObserver] = [self.stats]
        self._worker = BatchWorker(
            encoder,
            self.observers,
            max_batch_tokens=max_batch_tokens,
            slot_policy=slot_policy,
            max_input_chars=max_input_chars,
        )
        self.max_input_chars = self._worker.max_input_chars
        self._in_flight = 0
        self._accepting = True
        self._idle = asyncio.Event()
        self._idle.set()
        self._finished: deque[float] = deque(maxlen=256)  # completion times, for Retry-After

    @classmethod
    def from_settings(cls, encoder: Encoder, settings: Settings) -> Batcher:
        return cls(
            encoder,
            max_queue=settings.max_queue_requests,
            timeout_s=settings.request_timeout_s,
            max_batch_tokens=settings.max_batch_tokens,
            slot_policy=settings.batch_slot_policy,
            max_input_chars=settings.max_input_chars,
        )

    def add_observer(self, observer: BatcherObserver) -> None:
        """Subscribe to batch events (e.g. Prometheus metrics). Call before traffic starts."""
        self.observers.append(observer)

    @property
    def queue_depth(self) -> int:
        """Requests admitted and not yet answered (waiting or running): what ``max_queue`` bounds."""
        return self._in_flight

    @property
    def accepting(self) -> bool:
        return self._accepting

    def waiting_texts(self) -> int:
        """Texts tokenized and waiting for the next batch (admitted, not yet handed to the encoder):
        everything queued joins the next batch once this count covers it."""
        return self._worker.waiting_texts()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` has told the worker to take no further batch (the one in progress ends)."""
        return self._worker.stopping

    async def start(self) -> None:
        self._worker.start()

    def retry_after(self) -> int:
        """Seconds until the current queue has likely drained, from the recent completion rate."""
        if len(self._finished) < 2:
            return 1
        span = self._finished[-1] - self._finished[0]
        rate = (len(self._finished) - 1) / span if span > 0 else float("inf")
        return int(min(60, max(1, math.ceil(self._in_flight / rate))))

    async def embed(
        self,
        texts: Sequence[str],
        bank: PrefixBank,
        slots: Sequence[int],
        *,
        truncate: bool = True,
        token_limit: int | None = None,
    ) -> EmbedOutput:
        """Vectors of ``texts`` under ``slots`` of ``bank``. ``token_limit``: tokenize to this many
        tokens instead of the limit of ``slots`` (the pipeline passes the limit of a whole request when
        it computes only some of its slots)."""
        if not self._accepting:
            raise NotReady("the server is shutting down; retry on another replica")
        if not texts:
            return EmbedOutput(np.zeros((0, len(slots), self.encoder.dim), dtype=np.float32), ())
        if self._in_flight >= self.max_queue:
            self._dropped("queue_full")
            raise QueueFull(
                f"queue is full ({self.max_queue} requests); retry later", retry_after=self.retry_after()
            )
        self._worker.start()
        loop = asyncio.get_running_loop()
        req = EmbedJob(
            texts,
            bank,
            slots,
            truncate=truncate,
            token_limit=token_limit,
            deadline=time.monotonic() + self.timeout_s,
            loop=loop,
            future=loop.create_future(),
        )
        self._in_flight += 1
        self._idle.clear()
        try:
            self._worker.submit(req)
            try:
                async with asyncio.timeout(self.timeout_s):
                    out = await req.future
            except TimeoutError:
                req.cancelled = True
                self._dropped("deadline")
                raise DeadlineExceeded(f"request took longer than {self.timeout_s:g} s") from None
            except DeadlineExceeded:
                self._dropped("deadline")
                raise
            except asyncio.CancelledError:  # the client went away: skip its queued work
                req.cancelled = True
                self._dropped("cancelled")
                raise
            self._finished.append(time.monotonic())
            return out
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    def _dropped(self, reason: str) -> None:
        for obs in self.observers:
            obs.on_dropped(reason)

    async def drain(self, timeout: float | None = None) -> bool:
        """Stop admitting (new calls: 503 :class:`NotReady`) and wait for the admitted ones.

        Returns True when everything admitted finished within ``timeout``.
        """
        self._accepting = False
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, timeout: float | None = None) -> None:
        """Drain (at most ``timeout``, default the request deadline), then stop the threads."""
        await self.drain(self.timeout_s if timeout is None else timeout)
        failed = await asyncio.to_thread(self._worker.stop, 5.0)
        for _ in range(failed):  # still queued when the drain ran out of time
            self._dropped("shutdown")
