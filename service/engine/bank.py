"""The prefix bank: an immutable snapshot of the loaded prefixes, stacked for one forward call."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from service.engine.prefix import LoadedPrefix
from service.errors import PrefixNotFound, shown_list


@dataclass(frozen=True, eq=False)
class PrefixBank:
    """Stacked K/V of P prefixes, padded to the longest (``lengths`` says which slots are real).

    keys, values: float32 [P, layers, heads, Lmax, head_dim] on CPU; lengths, shifts, firsts: int64 [P].
    A member with ``first_layer`` = S fills layers S..L-1 (its key holds L - S layers) and leaves zeros
    below; ``firsts`` records S (the forward masks the member's slots in layers below it). A member of
    length 0 with S = L (the built-in ``base``) acts in no layer. ``version`` is a digest of the
    members, so encoders re-upload the bank only when it changes.
    """

    prefixes: tuple[LoadedPrefix, ...]
    keys: torch.Tensor
    values: torch.Tensor
    lengths: torch.Tensor
    shifts: torch.Tensor
    firsts: torch.Tensor
    version: str

    @classmethod
    def build(
        cls,
        prefixes: Iterable[LoadedPrefix],
        spec_shape: tuple[int, int, int] | None = None,
        *,
        base: LoadedPrefix | None = None,
    ) -> PrefixBank:
        """Members sorted by name, after ``base`` (the built-in backbone vector) when given.

        ``spec_shape`` = (layers, heads, head_dim), needed only to shape a bank of no file prefixes.
        """
        members = tuple(sorted(prefixes, key=lambda p: p.name))
        if base is not None:
            members = (base, *(p for p in members if p.name != base.name))
        if members:
            first = members[0]
            layers = first.first_layer + int(first.key.shape[0])
            heads, hdim = int(first.key.shape[1]), int(first.key.shape[3])
        elif spec_shape is not None:
            layers, heads, hdim = spec_shape
        else:
            layers = heads = hdim = 0
        # at least one slot: a bank of zero-length members (base alone) still has a masked slot
        lmax = max(1, max((p.prefix_len for p in members), default=1))
        keys = torch.zeros(len(members), layers, heads, lmax, hdim)
        values = torch.zeros_like(keys)
        for i, p in enumerate(members):
            s, n = p.first_layer, p.prefix_len
            if s + int(p.key.shape[0]) != layers:
                raise ValueError(
                    f"prefix {p.name!r}: first_layer {s} + {int(p.key.shape[0])} key layers != {layers} layers"
                )
            keys[i, s:, :, :n] = p.key
            values[i, s:, :, :n] = p.value
        version = hashlib.sha256("".join(f"{p.name}={p.digest};" for p in members).encode()).hexdigest()[:16]
        return cls(
            prefixes=members,
            keys=keys,
            values=values,
            lengths=torch.tensor([p.prefix_len for p in members], dtype=torch.long),
            shifts=torch.tensor([p.position_shift for p in members], dtype=torch.long),
            firsts=torch.tensor([p.first_layer for p in members], dtype=torch.long),
            version=version,
        )

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.prefixes]

    def __len__(self) -> int:
        return len(self.prefixes)

    def get(self, name: str) -> LoadedPrefix:
        return self.prefixes[self.indices([name])[0]]

    def indices(self, names: Sequence[str]) -> list[int]:
        """Bank slots of ``names``, in order; unknown names raise :class:`PrefixNotFound`."""
        lookup = {p.name: i for i, p in enumerate(self.prefixes)}
        unknown = [n for n in names if n not in lookup]
        if unknown:
            known = shown_list(list(lookup), quoted=False) or "none"
            raise PrefixNotFound(f"unknown prefix(es) {shown_list(unknown)}; known prefixes: {known}")
        return [lookup[n] for n in names]

    def max_shift(self, slots: Sequence[int]) -> int:
        return max((int(self.shifts[s]) for s in slots), default=0)
