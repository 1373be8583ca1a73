"""The one set of limits a prefix file is checked against (serve, embed, bench and method all use it).

Why each bound (see also prefixes/README.md, "Limits"):

- ``max_abs_value`` = 100: a prefix key enters ``q . k / sqrt(head_dim)``; in the worst case (every
  component at the bound, aligned with the query) that is ``sqrt(head_dim) * max|q| * 100`` =
  ``800 * max|q|`` for head_dim 64, below float16's largest finite value (65504) while the model's
  own query components stay under 81. all-MiniLM-L6-v2's queries stay under 17 on ordinary text
  (its own keys under 11, values under 5), and the shipped prefixes under 2.6: the bound leaves a
  wide margin for real prefixes and refuses the 1e30 that turned every vector into NaN. A value
  entry is averaged by attention, so it is bounded by the same number before the output projection.
- ``max_header_bytes`` / ``max_metadata_depth``: metadata is parsed in full, so its size and JSON
  nesting are capped (a 100k-deep array would exhaust Python's recursion).
- ``max_config_bytes``: ``adapter_config.json`` is small (a few hundred bytes) and read whole.
- ``require_checksum``: a native file must carry ``content_sha256`` (our writers always record it):
  only a checksum proves a file whole. A writer that pauses longer than any settle window fools every
  timing rule (issue 23: a 0.8 s pause passed the 500 ms rule and torn vectors were served).
- ``settle_s``: a file without a checksum (a PEFT folder, or a native file when ``require_checksum``
  is off) is loaded only once two reads this far apart have the same content (0: on the first read).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PREFIX_LEN = 256
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_ABS_VALUE = 100.0
SETTLE_S = 0.5


@dataclass(frozen=True)
class PrefixLimits:
    max_prefix_len: int = MAX_PREFIX_LEN  # virtual tokens per layer
    max_file_bytes: int = MAX_FILE_BYTES  # a native file, or a PEFT adapter's weights
    max_config_bytes: int = 64 * 1024  # adapter_config.json
    max_header_bytes: int = 1024 * 1024  # the safetensors JSON header, metadata included
    max_metadata_depth: int = 32  # JSON nesting of one metadata value
    max_abs_value: float = MAX_ABS_VALUE  # every key/value/prompt entry: finite and |x| <= this
    settle_s: float = SETTLE_S  # two equal reads this far apart before an unverified file is loaded
    require_checksum: bool = True  # a native file without content_sha256 is refused
