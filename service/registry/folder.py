"""Read a prefix folder once (``embed``, ``bench``, ``method``): the registry's own scan, so the rules
are the server's (names, duplicate names, limits, files still being written)."""

from __future__ import annotations

from pathlib import Path

from service.engine.backbone import BackboneSpec
from service.engine.prefix import LoadedPrefix
from service.registry.limits import PrefixLimits
from service.registry.loader import Rejected
from service.registry.registry import PrefixRegistry

__all__ = ["Rejected", "scan_folder"]


def scan_folder(
    folder: Path, spec: BackboneSpec, limits: PrefixLimits | None = None
) -> tuple[list[LoadedPrefix], list[Rejected]]:
    """Every valid prefix of ``folder`` (sorted by name) and every rejected entry with its reason."""
    if not folder.is_dir():
        return [], [Rejected(str(folder), f"{folder}: prefix folder does not exist")]
    snap = PrefixRegistry(folder, spec, limits).scan()
    return [p for p in snap.bank.prefixes if not p.builtin], list(snap.rejected)
