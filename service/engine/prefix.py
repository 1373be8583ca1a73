"""The prefix: one validated set of per-layer key/value vectors, the engine's unit of input.

Owned by the engine (the bank stacks these); the registry builds them from files, the method
package from training. ``first_layer`` = S means the prefix acts only in layers S..L-1 (a
shared-trunk prefix): ``key``/``value`` then hold L - S layers.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from service.engine.backbone import BackboneSpec
    from service.engine.calibration import Calibration

# The reserved name of the built-in vector: the backbone without any prefix.
BASE_NAME = "base"


@dataclass(frozen=True)
class LoadedPrefix:
    """One validated prefix. ``key``/``value``: float32 [layers - first_layer, heads, prefix_len,
    head_dim] on CPU."""

    name: str
    digest: str  # sha256 of the content
    key: torch.Tensor
    value: torch.Tensor
    position_convention: str  # "peft": text positions shifted by prefix_len, as PEFT trains them
    source: str
    kind: str  # "native" | "peft" | "builtin"
    metadata: dict[str, Any] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    first_layer: int = 0  # layers below this run without the prefix (the shared trunk)
    # statistics of its unit vectors for the calibrated encodings (None: served with the fallback)
    calibration: Calibration | None = None

    @property
    def prefix_len(self) -> int:
        return int(self.key.shape[2])

    @property
    def position_shift(self) -> int:
        return self.prefix_len if self.position_convention == "peft" else 0

    @property
    def builtin(self) -> bool:
        return self.kind == "builtin"


def base_prefix(spec: BackboneSpec, calibration: Calibration | None = None) -> LoadedPrefix:
    """The built-in ``base`` member: the backbone with no prefix. prefix_len 0 and first_layer = L,
    so it acts in no layer (and joins a call at any trunk depth); its digest names the backbone (its
    calibration, read from the base calibration file, is not part of it: the vectors do not change)."""
    empty = torch.zeros(0, spec.num_heads, 0, spec.head_dim)
    # a full sha256 hex digest, the format of every file prefix's digest
    digest = hashlib.sha256(f"{BASE_NAME}:{spec.fingerprint}".encode()).hexdigest()
    return LoadedPrefix(
        name=BASE_NAME,
        digest=digest,
        key=empty,
        value=empty.clone(),
        position_convention="none",
        source="builtin",
        kind="builtin",
        metadata={"description": "the backbone's own vector, without any prefix"},
        first_layer=spec.num_layers,
        calibration=calibration,
    )
