"""The in-process vector cache: (text, prefix digest, pooling, truncation, token limit) -> the vector.

Production text repeats (retries, duplicates, one title in many records); a repeated text should not
cost a forward pass. The pipeline looks every (text, prefix) pair up before batching: a request whose
pairs are all cached never enters the batcher, and a partial hit computes only the missing pairs.

- **Exact.** The value is the float32 vector the batcher returned (unnormalized, before any encoding),
  so a cached answer is bit-identical to a computed one.
- **Invalidated by digest.** A prefix's digest is in the key, so a replaced or re-trained prefix can
  never serve an old vector: its old entries become unreachable and age out; its neighbours stay.
- **Bounded in bytes.** Each entry is charged its vector, its text and a fixed per-entry overhead
  (:data:`ENTRY_OVERHEAD`, measured with tracemalloc in the tests); least recently used entries are
  evicted past ``max_bytes``. ``max_bytes`` 0 turns the cache off.
- **Per replica.** It lives on the event loop of one process (no lock: only the loop touches it).
  A shared cache (e.g. Redis) would let replicas share hits, at a network round trip and a
  serialization per lookup, which costs about what a short text's forward pass costs on a GPU.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# Bytes an entry costs beyond its vector's data and its text: the key tuple, the OrderedDict node, the
# ndarray object and the entry record (measured in tests/unit/test_vector_cache.py, with margin).
ENTRY_OVERHEAD = 400

CacheKey = tuple[str, str, str]  # (text, prefix digest, variant: pooling/truncation/token limit)


@dataclass(frozen=True, slots=True)
class CachedVector:
    vector: np.ndarray  # float32 [dim], read-only
    tokens: int  # the text's prompt tokens under this token limit (for usage)


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    max_bytes: int


class VectorCache:
    """An LRU of vectors under a byte budget. Not thread-safe: call from one thread (the event loop)."""

    def __init__(self, max_bytes: int, *, on_change: Callable[[str, int], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, CachedVector] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = self.evictions = 0
        self._on_change = on_change  # (event, count): "hit" | "miss" | "eviction", for metrics

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> CachedVector | None:
        """The entry (now most recently used), or None; counted as a hit or a miss."""
        entry = self._entries.get(key)
        if entry is None:
            self._count("miss", 1)
            return None
        self._entries.move_to_end(key)
        self._count("hit", 1)
        return entry

    def put(self, key: CacheKey, vector: np.ndarray, tokens: int) -> None:
        """Store a copy of ``vector`` (so a caller's later writes cannot change it), evicting the least
        recently used entries to stay within the budget. An entry larger than the budget is not kept."""
        cost = entry_bytes(key, vector)
        if cost > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= entry_bytes(key, old.vector)
        frozen = np.array(vector, dtype=np.float32, copy=True)
        frozen.flags.writeable = False
        self._entries[key] = CachedVector(frozen, tokens)
        self._bytes += cost
        evicted = 0
        while self._bytes > self.max_bytes:
            old_key, old_entry = self._entries.popitem(last=False)
            self._bytes -= entry_bytes(old_key, old_entry.vector)
            evicted += 1
        if evicted:
            self._count("eviction", evicted)

    def stats(self) -> CacheStats:
        return CacheStats(
            self.hits, self.misses, self.evictions, len(self._entries), self._bytes, self.max_bytes
        )

    def _count(self, event: str, n: int) -> None:
        if event == "hit":
            self.hits += n
        elif event == "miss":
            self.misses += n
        else:
            self.evictions += n
        if self._on_change is not None:
            self._on_change(event, n)


def entry_bytes(key: CacheKey, vector: np.ndarray) -> int:
    """What one entry is charged: the vector's data, the text, and :data:`ENTRY_OVERHEAD`."""
    return int(vector.nbytes) + sys.getsizeof(key[0]) + ENTRY_OVERHEAD


def variant_key(pooling: str, truncate: bool, token_limit: int) -> str:
    """The part of the key that says how a text became its vector, besides the prefix digest."""
    return f"{pooling}|{'cut' if truncate else 'whole'}|{token_limit}"


def keys_for(texts: Sequence[str], digests: Sequence[str], variant: str) -> list[list[CacheKey]]:
    """keys[b][p] for text b under the prefix of digest p."""
    return [[(text, digest, variant) for digest in digests] for text in texts]
