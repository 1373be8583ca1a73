"""What a ``Batcher`` holds, read for tests that must know when requests are ready to coalesce."""

from __future__ import annotations

from service.batching import Batcher


def waiting_texts(batcher: Batcher) -> int:
    """Texts tokenized and waiting for the inference worker (live requests only).

    White-box (the worker's ready queue, read under its lock): the one moment a test cannot observe
    from outside, and the one it needs before releasing a held encoder so that everything queued
    joins the next batch.
    """
    worker = batcher._worker
    with worker._cond:
        return sum(r.size - r.next_text for r in worker._ready if r.live)
