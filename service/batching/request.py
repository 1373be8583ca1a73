"""One awaited ``Batcher.embed`` call as the worker threads see it (an :class:`EmbedJob`), and what
it resolves to."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.engine.bank import PrefixBank


@dataclass(frozen=True)
class EmbedOutput:
    """Vectors of every text under every requested slot, and each text's real token count."""

    vectors: np.ndarray  # float32 [B, P, dim], unnormalized
    token_counts: tuple[int, ...]  # per text, after truncation

    @property
    def prompt_tokens(self) -> int:
        return sum(self.token_counts)


class EmbedJob:
    """Texts x slots of ONE bank snapshot, split by the worker into one or more forward batches.

    Written by the tokenizer thread (``token_ids``), then only by the inference worker
    (``next_text``, ``done_texts``, ``vectors``); ``cancelled`` is set from the event loop and only
    read elsewhere (a plain attribute store is atomic in CPython).
    """

    __slots__ = (
        "bank",
        "cancelled",
        "deadline",
        "done_texts",
        "enqueued_at",
        "failed",
        "future",
        "loop",
        "next_text",
        "slots",
        "started_at",
        "texts",
        "token_ids",
        "token_limit",
        "truncate",
        "vectors",
    )

    def __init__(
        self,
        texts: Sequence[str],
        bank: PrefixBank,
        slots: Sequence[int],
        *,
        truncate: bool,
        deadline: float,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[EmbedOutput],
        token_limit: int | None = None,
    ) -> None:
        self.texts = list(texts)
        self.token_limit = token_limit  # None: the limit of ``slots`` (the model's, less any shift)
        self.bank = bank
        self.slots = tuple(slots)
        self.truncate = truncate
        self.deadline = deadline
        self.loop = loop
        self.future = future
        self.enqueued_at = time.monotonic()
        self.started_at: float | None = None
        self.token_ids: list[np.ndarray] = []
        self.next_text = 0
        self.done_texts = 0
        self.vectors: np.ndarray | None = None
        self.cancelled = False
        self.failed = False

    @property
    def size(self) -> int:
        return len(self.texts)

    @property
    def prompt_tokens(self) -> int:
        return sum(len(ids) for ids in self.token_ids)

    @property
    def live(self) -> bool:
        """Still wanted: nobody cancelled it, it has not failed and nobody stopped awaiting it."""
        return not (self.cancelled or self.failed or self.future.done())

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def resolve(self, value: EmbedOutput | None = None, error: BaseException | None = None) -> None:
        """Hand the result (or error) to the awaiting coroutine, from any thread."""

        def _set() -> None:
            if self.future.done():  # the awaiting task gave up (deadline, disconnect)
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(value)  # type: ignore[arg-type]

        # RuntimeError: the loop is closed, nobody is awaiting any more
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_set)

    def fail(self, error: BaseException) -> None:
        self.failed = True
        self.resolve(error=error)
