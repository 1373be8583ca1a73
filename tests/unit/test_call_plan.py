"""How a batch becomes model calls (service/engine/encoder.py): the fan-out depth of each slot, the
grouping of mixed depths, and the texts per call under the CPU row budget."""

from __future__ import annotations

import pytest
import torch

from service.engine.bank import PrefixBank
from service.engine.encoder import call_depth, part_sizes, slot_depth, slot_groups, texts_per_call
from service.engine.forward import layer_rows
from service.engine.prefix import LoadedPrefix

LAYERS, HEADS, HDIM = 6, 2, 4


def member(name: str, first_layer: int, length: int, convention: str = "none") -> LoadedPrefix:
    shape = (LAYERS - first_layer, HEADS, length, HDIM)
    return LoadedPrefix(
        name,
        f"d-{name}",
        torch.ones(shape),
        torch.ones(shape),
        convention,
        "<t>",
        "native",
        first_layer=first_layer,
    )


def bank() -> PrefixBank:
    # sorted by name: a (S0, peft), b (S0), c (S4), d (S5), e (S6 = L: acts nowhere, as base)
    return PrefixBank.build(
        [
            member("a", 0, 3, "peft"),
            member("b", 0, 2),
            member("c", 4, 4),
            member("d", 5, 1),
            member("e", LAYERS, 0),
        ]
    )


def test_bank_places_each_member_from_its_first_layer() -> None:
    b = bank()
    assert b.firsts.tolist() == [0, 0, 4, 5, LAYERS]
    assert b.keys.shape == (5, LAYERS, HEADS, 4, HDIM)
    c = b.names.index("c")
    assert b.keys[c, :4].abs().sum() == 0  # below its first layer: nothing
    assert bool((b.keys[c, 4:, :, :4] == 1).all())
    assert b.keys[c, 4:, :, 4:].numel() == 0
    assert b.keys[b.names.index("e")].abs().sum() == 0


def test_depths_shift_forces_zero_and_cap_is_last_layer() -> None:
    b = bank()
    top = LAYERS - 1
    assert [slot_depth(b, s, top) for s in range(5)] == [0, 0, 4, 5, top]
    assert call_depth(b, [2, 3, 4], top) == 4
    assert call_depth(b, [4], top) == top  # base alone: everything but the last layer is trunk
    assert call_depth(b, [2, 3], 0) == 0  # a backend without deeper graphs


def test_groups_per_depth_or_one_call_at_the_smallest() -> None:
    b = bank()
    slots = [3, 0, 2, 4, 1, 2]
    per_depth = slot_groups(b, slots, LAYERS - 1, by_depth=True)
    # depth 5 (slot 3 and base) joins depth 4: 1 layer x 2 slots extra < its own 5-layer trunk;
    # that group (4 slots) stays apart from depth 0: 4 x 4 extra rows > a 4-layer trunk
    assert [(g.fan_out, g.columns, g.slots) for g in per_depth] == [
        (0, (1, 4), (0, 1)),
        (4, (0, 2, 3, 5), (3, 2, 4, 2)),
    ]
    # base alone beside all-layer prefixes rides in their call (L rows either way, one call fewer)
    assert [(g.fan_out, g.slots) for g in slot_groups(b, [0, 4], LAYERS - 1, by_depth=True)] == [(0, (0, 4))]
    # one deep prefix joins a shallow call when that is cheaper than its own trunk
    assert [g.fan_out for g in slot_groups(b, [2, 3], LAYERS - 1, by_depth=True)] == [4]
    one = slot_groups(b, slots, LAYERS - 1, by_depth=False)
    assert [(g.fan_out, g.columns, g.slots) for g in one] == [(0, tuple(range(6)), tuple(slots))]
    assert slot_groups(b, [], LAYERS - 1, by_depth=True) == []


def test_texts_per_call_budgets_layer_rows() -> None:
    # all-layer prefixes: chunk_rows // P texts (rows of every layer <= chunk_rows)
    assert texts_per_call(32, 100, 8, 0, LAYERS) == 4
    assert texts_per_call(32, 100, 64, 0, LAYERS) == 1  # at least one text
    # a trunk to layer 4: 4 + 2 x 8 = 20 layer-rows per text, budget 32 x 6 -> 9 texts
    assert texts_per_call(32, 100, 8, 4, LAYERS) == 32 * LAYERS // layer_rows(LAYERS, 4, 1, 8) == 9
    assert texts_per_call(0, 100, 8, 4, LAYERS) == 100  # 0 = one call


@pytest.mark.parametrize(
    ("n", "per_call", "calls", "sizes"),
    [
        (5, 4, 2, [3, 2]),  # balanced pairs, not 4 + 1
        (6, 4, 2, [3, 3]),
        (8, 4, 2, [4, 4]),
        (9, 4, 2, [3, 2, 2, 2]),  # 3 parts of <= 4 rounded up to 4: both calls busy to the end
        (2, 4, 2, [1, 1]),  # two texts: side by side, one thread each
        (1, 4, 2, [1]),  # one text: one call, alone (every CPU)
        (5, 4, 1, [3, 2]),  # one call at a time: as few parts as the budget allows, near-equal
        (3, 8, 3, [1, 1, 1]),
    ],
)
def test_part_sizes_keep_side_by_side_calls_balanced(
    n: int, per_call: int, calls: int, sizes: list[int]
) -> None:
    got = part_sizes(n, per_call, calls)
    assert got == sizes
    assert sum(got) == n
    assert max(got) <= per_call
