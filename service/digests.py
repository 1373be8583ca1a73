"""Which prefix versions made a response: the ``x-prefix-digests`` header, kept small at any bank size.

- ``x-prefix-set-digest``: always; the sha256 (hex) of the ordered ``name=digest,name=digest`` list, the
  exact text ``x-prefix-digests`` holds or would hold.
- ``x-prefix-digests``: that list, in the order of the vectors, while it fits in
  :data:`MAX_DIGESTS_HEADER_BYTES` (4 KiB: about 50 prefixes). Past it the list is left out: about 71
  bytes a prefix made 2,000 prefixes a 142 KB header that curl, httpx and the OpenAI client refuse.
- ``/embed``'s body always lists every digest; ``GET /v1/prefix-sets/{set_digest}`` answers the list of
  a set left out of a header (:class:`PrefixSets` remembers those this process served).

Clients that do not know the headers (OpenAI's) ignore them.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

from service.engine.prefix import LoadedPrefix

DIGESTS_HEADER = "x-prefix-digests"
SET_DIGEST_HEADER = "x-prefix-set-digest"
MAX_DIGESTS_HEADER_BYTES = 4096
# The sets past the bound remembered for the lookup route, counted in name=digest pairs (~150 bytes
# each with their Python objects: about 10 MB at most), oldest dropped first.
MAX_REMEMBERED_PAIRS = 65_536

Pairs = tuple[tuple[str, str], ...]


def digest_list(pairs: Pairs) -> str:
    return ",".join(f"{name}={digest}" for name, digest in pairs)


def set_digest(pairs: Pairs) -> str:
    """sha256 hex of the ordered ``name=digest`` list (what a client recomputes to check a lookup)."""
    return hashlib.sha256(digest_list(pairs).encode()).hexdigest()


class PrefixSets:
    """The prefix sets left out of a header, by set digest: a bounded LRU (thread-safe)."""

    def __init__(self, max_pairs: int = MAX_REMEMBERED_PAIRS) -> None:
        self.max_pairs = max_pairs
        self._sets: OrderedDict[str, Pairs] = OrderedDict()
        self._pairs = 0
        self._lock = threading.Lock()

    def remember(self, digest: str, pairs: Pairs) -> None:
        with self._lock:
            if digest in self._sets:
                self._sets.move_to_end(digest)
                return
            self._sets[digest] = pairs
            self._pairs += len(pairs)
            while self._pairs > self.max_pairs and len(self._sets) > 1:
                _, dropped = self._sets.popitem(last=False)
                self._pairs -= len(dropped)

    def get(self, digest: str) -> Pairs | None:
        with self._lock:
            return self._sets.get(digest)


def digests_header(prefixes: Sequence[LoadedPrefix], sets: PrefixSets) -> dict[str, str]:
    """The headers naming the prefix versions of a response (see the module docstring)."""
    pairs = tuple((p.name, p.digest) for p in prefixes)
    listed = digest_list(pairs)
    digest = hashlib.sha256(listed.encode()).hexdigest()
    if len(listed) <= MAX_DIGESTS_HEADER_BYTES:
        return {DIGESTS_HEADER: listed, SET_DIGEST_HEADER: digest}
    sets.remember(digest, pairs)
    return {SET_DIGEST_HEADER: digest}
