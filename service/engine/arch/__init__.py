"""Architecture adapters, chosen from ``config.model_type`` (see ``base.py``)."""

from __future__ import annotations

from service.engine.arch.base import Architecture, LayerPrefix
from service.engine.arch.bert import BertFamily
from service.engine.arch.mpnet import MPNetFamily

__all__ = ["ARCHITECTURES", "SUPPORTED_FAMILIES", "Architecture", "LayerPrefix", "architecture_for"]

ARCHITECTURES: tuple[Architecture, ...] = (BertFamily(), MPNetFamily())
SUPPORTED_FAMILIES = frozenset(t for a in ARCHITECTURES for t in a.model_types)


def architecture_for(model_type: str) -> Architecture:
    """The adapter that runs ``model_type``; ValueError naming the supported types otherwise."""
    for arch in ARCHITECTURES:
        if model_type in arch.model_types:
            return arch
    raise ValueError(
        f"unsupported architecture {model_type!r}; supported: {', '.join(sorted(SUPPORTED_FAMILIES))}"
    )
