"""What goes over the wire: vector encodings and the response documents built from vectors.

The choices a request (or the ``embed`` command) makes are named here, without numpy, so that the
CLI declares its options without loading it."""

from typing import Literal

Encoding = Literal["float", "base64", "binary", "int8"]
# How a text's per-prefix vectors come back: one per name, or one concatenation in request order.
Combine = Literal["separate", "concat"]
