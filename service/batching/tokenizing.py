"""The tokenizer stage of the batcher: requests in, token ids out, one bad input fails one request.

Runs on one thread (the only one that touches the tokenizer). Three rules keep one request from
hurting the others:

- **A character cap before tokenizing** (``max_input_chars``): a longer input is cut to the cap
  (``truncate: true``) or answered 413 at once (``truncate: false``), so no input costs more than
  ``max_input_chars`` characters of tokenizer work.
- **Small requests first.** Requests of at most ``slice_chars`` characters are tokenized together,
  many per tokenizer call; a larger request is tokenized one slice (about ``slice_chars``
  characters) per turn, with the small requests that arrived meanwhile served between its slices.
  A huge request therefore holds the tokenizer for one slice at a time, not for all of its text.
- **A failing call is retried per request**, and the failing request's texts are examined to name
  the input and why (e.g. a lone surrogate); that request gets a 400, the others are served.

Over-long inputs without truncation are found in the same single tokenizer pass: texts are
tokenized with truncation at ``limit + 1`` tokens, so a length above ``limit`` means too long.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.batching.request import EmbedJob
from service.engine.encoder import Encoder
from service.engine.tokenize import text_token_limit
from service.errors import DeadlineExceeded, InferenceFailed, InputTooLong, InvalidInput, PrefixEmbedError

log = logging.getLogger(__name__)

CHARS_PER_TOKEN_CAP = 32
"""Default ``max_input_chars`` = this x ``max_input_tokens``. English WordPiece/BPE tokens average
about 4-5 characters; 32 leaves room for long words, URLs and whitespace runs, so a real text of
``max_input_tokens`` tokens is never cut by the cap before the tokenizer truncates it."""

SLICE_CHARS = 32768
"""Characters per tokenizer call at most (one text may exceed it: texts are never split)."""

_GROUP = 256  # requests taken from the queue per turn at most


def default_max_input_chars(max_input_tokens: int) -> int:
    return CHARS_PER_TOKEN_CAP * max_input_tokens


@dataclass
class _Pending:
    """A request admitted to the stage: its tokenizer length and how far its texts are tokenized."""

    req: EmbedJob
    max_length: int  # passed to the tokenizer (truncation): limit, or limit + 1 to detect too long
    limit: int  # the request's token limit
    chars: int

    @property
    def key(self) -> tuple[int, bool]:
        return self.max_length, self.req.truncate

    @property
    def done(self) -> bool:
        return len(self.req.token_ids) >= self.req.size


class TokenizerStage:
    """``run()`` on its thread: reads requests (None = stop) from ``inbox``, hands each fully
    tokenized request to ``emit`` (in arrival order among requests of the same size class)."""

    def __init__(
        self,
        encoder: Encoder,
        inbox: queue.SimpleQueue[EmbedJob | None],
        emit: Callable[[list[EmbedJob]], None],
        *,
        max_input_chars: int | None = None,
        slice_chars: int = SLICE_CHARS,
    ) -> None:
        self.encoder = encoder
        self.inbox = inbox
        self.emit = emit
        self.max_input_chars = max_input_chars or default_max_input_chars(encoder.max_input_tokens)
        self.slice_chars = slice_chars
        self._small: deque[_Pending] = deque()
        self._large: deque[_Pending] = deque()

    # --- loop ------------------------------------------------------------------------------------
    def run(self) -> None:
        stopping = False
        while not (stopping and not self._small and not self._large):
            if not stopping:
                stopping = self._take(block=not (self._small or self._large))
            try:
                if self._small:
                    self._small_call()
                if self._large:
                    self._large_slice()
            except Exception:  # a bug here must not strand the requests
                log.exception("tokenizer stage failed")
                for p in [*self._small, *self._large]:
                    p.req.fail(InferenceFailed("tokenization failed; see the server log"))
                self._small.clear()
                self._large.clear()

    def _take(self, *, block: bool) -> bool:
        """Admit waiting requests; True when the stop signal was read."""
        taken = 0
        while taken < _GROUP:
            try:
                item = self.inbox.get() if block and not taken else self.inbox.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            taken += 1
            pending = self._admit(item, time.monotonic())
            if pending is not None:
                (self._small if pending.chars <= self.slice_chars else self._large).append(pending)
        return False

    def _admit(self, req: EmbedJob, now: float) -> _Pending | None:
        """Deadline, token limit and the character cap; None when the request ended here."""
        if not req.live:
            return None
        if req.expired(now):
            req.fail(DeadlineExceeded("request waited past its deadline before tokenization"))
            return None
        cap = self.max_input_chars
        chars = 0
        for i, text in enumerate(req.texts):
            if len(text) > cap:
                if not req.truncate:
                    req.fail(
                        InputTooLong(
                            f"input {i} has {len(text)} characters, over the limit of {cap} "
                            "(max_input_chars, checked before tokenizing); shorten it or send truncate: true"
                        )
                    )
                    return None
                req.texts[i] = text[:cap]  # the tokenizer would cut it anyway: never read the rest
            chars += len(req.texts[i])
        limit = req.token_limit
        if limit is None:
            limit = text_token_limit(
                self.encoder.spec, self.encoder.max_input_tokens, req.bank.max_shift(req.slots)
            )
        req.token_ids = []
        return _Pending(req, limit if req.truncate else limit + 1, limit, chars)

    # --- tokenizer calls -------------------------------------------------------------------------
    def _small_call(self) -> None:
        """One tokenizer call for the oldest small request and the small ones that share its key,
        up to ``slice_chars`` characters in all."""
        head = self._small[0]
        group: list[_Pending] = []
        rest: deque[_Pending] = deque()
        chars = 0
        for p in self._small:
            if p.key == head.key and (not group or chars + p.chars <= self.slice_chars):
                group.append(p)
                chars += p.chars
            else:
                rest.append(p)
        self._small = rest
        try:
            self._tokenize_into(group, [(p, 0, p.req.size) for p in group])
        except Exception:
            for p in group:  # find the bad one(s): each request alone
                p.req.token_ids = []
                self._tokenize_alone(p, 0, p.req.size)
        self._finish(group)

    def _large_slice(self) -> None:
        """The next slice (about ``slice_chars`` characters) of the oldest large request."""
        p = self._large[0]
        start = end = len(p.req.token_ids)
        chars = 0
        while end < p.req.size and (end == start or chars + len(p.req.texts[end]) <= self.slice_chars):
            chars += len(p.req.texts[end])
            end += 1
        if p.req.live:
            self._tokenize_alone(p, start, end)
        if not p.req.live or p.done:
            self._large.popleft()
            self._finish([p])

    def _tokenize_into(self, group: Sequence[_Pending], parts: Sequence[tuple[_Pending, int, int]]) -> None:
        """Tokenize texts [start, end) of each part's request in ONE call; append their ids."""
        head = group[0]
        texts = [t for p, a, b in parts for t in p.req.texts[a:b]]
        batch = self.encoder.tokenize(texts, max_length=head.max_length, truncate=True)
        row = 0
        for p, a, b in parts:
            for i in range(b - a):
                p.req.token_ids.append(batch.input_ids[row + i, : batch.lengths[row + i]])
            row += b - a

    def _tokenize_alone(self, p: _Pending, start: int, end: int) -> None:
        try:
            self._tokenize_into([p], [(p, start, end)])
        except Exception as exc:
            p.req.fail(self._explain(p, start, end, exc))

    def _explain(self, p: _Pending, start: int, end: int, exc: Exception) -> PrefixEmbedError:
        """Which input of texts [start, end) made the tokenizer raise, and why."""
        texts = p.req.texts
        for i in range(start, end):
            problem = text_problem(texts[i])
            if problem:
                return InvalidInput(f"input {i} {problem}")
        for i in range(start, end):
            try:
                self.encoder.tokenize([texts[i]], max_length=p.max_length, truncate=True)
            except Exception as one:
                return InvalidInput(f"input {i} cannot be tokenized ({type(one).__name__}: {one})")
        log.error("tokenizer call failed but every text alone succeeds", exc_info=exc)
        return InferenceFailed("tokenization failed; see the server log")

    def _finish(self, group: Sequence[_Pending]) -> None:
        """Check lengths of the non-truncating requests; emit the finished live ones."""
        ready = []
        for p in group:
            req = p.req
            if not req.live:
                continue
            if not req.truncate:
                over = next((i for i, ids in enumerate(req.token_ids) if len(ids) > p.limit), None)
                if over is not None:
                    req.fail(
                        InputTooLong(
                            f"input {over} is over the limit of {p.limit} tokens (max_input_tokens, less "
                            "the prefixes' position shift); shorten it or send truncate: true"
                        )
                    )
                    continue
            ready.append(req)
        if ready:
            self.emit(ready)


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be tokenized, when it is something we can name (else None)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        return (
            f"contains a lone surrogate (U+{code:04X} at character {exc.start}); "
            "send valid Unicode (a JSON \\ud800-\\udbff escape must be followed by a \\udc00-\\udfff one)"
        )
    return None
