"""What goes over the wire: vector encodings and the response documents built from vectors.

The choices a request (or the ``embed`` command) makes are named here, without numpy, so that the
CLI declares its options without loading it."""

from typing import Literal

# float/base64: float32 numbers; the quantized four: sentence-transformers' conventions, calibrated per
# prefix (service/wire/encodings.py).
Encoding = Literal["float", "base64", "int8", "uint8", "binary", "ubinary"]
# How a text's per-prefix vectors come back: one per name, or one concatenation in request order.
Combine = Literal["separate", "concat"]
