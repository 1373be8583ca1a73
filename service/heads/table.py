"""Which heads a snapshot serves: every loaded head, whether it is enabled, and whether it is
available, i.e. every input prefix is loaded, enabled and has the digest the head was fitted on.

A head is never served from vectors it was not fitted on: an input prefix that is missing, disabled
or changed (another digest) makes the head unavailable, with that reason, until it is restored.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from service.engine.bank import PrefixBank
from service.errors import HeadDisabled, HeadNotFound, HeadUnavailable, NoAvailableHeads, shown, shown_list
from service.heads.folder import HeadScan
from service.heads.head import TaskHead
from service.registry.loader import Rejected
from service.registry.served import member_problems


@dataclass(frozen=True)
class ServedHead:
    head: TaskHead
    enabled: bool
    stale: bool  # its file is rejected now; the previous good version is listed (and served)
    reason: str | None  # why it is unavailable; None when every input is as fitted

    @property
    def available(self) -> bool:
        return self.reason is None


def unavailable_reason(
    head: TaskHead, bank: PrefixBank, enabled: Collection[str], pooling: str | None
) -> str | None:
    """Why ``head`` cannot predict from this bank (every wrong input named), or None."""
    inputs = ((i.name, i.digest) for i in head.inputs)
    problems = [f"input {p}" for p in member_problems(inputs, bank, enabled, pins="the head was fitted on")]
    fitted = head.metadata.get("pooling")
    if pooling is not None and fitted is not None and fitted != pooling:
        problems.append(f"fitted on {fitted!r} pooling; this server pools {pooling!r}")
    if not problems:
        return None
    return "; ".join(problems) + " (enable or restore those prefixes, or refit the head)"


@dataclass(frozen=True)
class HeadTable:
    """The heads of one snapshot (by name) and the rejected head files. Immutable."""

    heads: tuple[ServedHead, ...] = ()
    rejected: tuple[Rejected, ...] = ()

    @classmethod
    def build(
        cls,
        scan: HeadScan,
        bank: PrefixBank,
        enabled: Collection[str],
        disabled_heads: Collection[str],
        pooling: str | None = None,
    ) -> HeadTable:
        served = tuple(
            ServedHead(
                h,
                name not in disabled_heads,
                name in scan.stale,
                unavailable_reason(h, bank, enabled, pooling),
            )
            for name, h in sorted(scan.heads.items())
        )
        return cls(served, scan.rejected)

    @property
    def names(self) -> list[str]:
        return [s.head.name for s in self.heads]

    def get(self, name: str) -> ServedHead:
        for s in self.heads:
            if s.head.name == name:
                return s
        raise HeadNotFound(
            f"unknown head {shown(name)}; known heads: {shown_list(self.names, quoted=False) or 'none'}"
        )

    def choose(self, tasks: Sequence[str] | None) -> list[TaskHead]:
        """The heads a ``POST /predict`` runs: ``None`` -> every enabled, available head (by name);
        else the named ones in request order, each known (404), enabled and available (409)."""
        if tasks is None:
            chosen = [s.head for s in self.heads if s.enabled and s.available]
            if not chosen:
                off = [f"{s.head.name} ({s.reason or 'disabled'})" for s in self.heads]
                detail = f": {'; '.join(off[:10])}" if off else "; add a head file to the heads/ folder"
                raise NoAvailableHeads(f"no head is enabled and available{detail}")
            return chosen
        by_name = {s.head.name: s for s in self.heads}
        unknown = [n for n in tasks if n not in by_name]
        if unknown:
            raise HeadNotFound(
                f"unknown head(s) {shown_list(unknown)}; "
                f"known heads: {shown_list(list(by_name), quoted=False) or 'none'}"
            )
        served = [by_name[n] for n in tasks]
        disabled = [s.head.name for s in served if not s.enabled]
        if disabled:
            raise HeadDisabled(f"head(s) {shown_list(disabled)} are disabled; enable with PATCH /heads")
        broken = [s for s in served if not s.available]
        if broken:
            more = f" (and {len(broken) - 10} more heads)" if len(broken) > 10 else ""
            raise HeadUnavailable(
                "; ".join(f"head {s.head.name!r} is unavailable: {s.reason}" for s in broken[:10]) + more
            )
        return [s.head for s in served]


def input_names(heads: Sequence[TaskHead]) -> list[str]:
    """The union of ``heads``' inputs, in order of first use: the prefixes of the one embedding batch."""
    names: list[str] = []
    for h in heads:
        names.extend(i.name for i in h.inputs if i.name not in names)
    return names
