"""Warm-up sets up every fan-out depth the loaded prefixes can need (for ONNX: one export per depth),
so that the first request after start pays for none of it."""

from __future__ import annotations

import torch

from service.engine.bank import PrefixBank
from service.engine.prefix import LoadedPrefix, base_prefix
from service.runtime import warm_up
from tests.support.fake_encoder import FAKE_SPEC, FakeEncoder


def member(name: str, first: int, convention: str = "none", length: int = 2) -> LoadedPrefix:
    shape = (FAKE_SPEC.num_layers - first, FAKE_SPEC.num_heads, length, FAKE_SPEC.head_dim)
    return LoadedPrefix(
        name,
        f"d-{name}",
        torch.zeros(shape),
        torch.zeros(shape),
        convention,
        "<t>",
        "native",
        first_layer=first,
    )


def test_one_call_per_distinct_member_depth() -> None:
    top = FAKE_SPEC.num_layers - 1
    members = [member("a", 0, "peft"), member("b", 0), member("c", top), member("d", top)]
    bank = PrefixBank.build(members, base=base_prefix(FAKE_SPEC))
    fake = FakeEncoder()
    warm_up(fake, bank)
    probe, *calls = fake.calls
    assert probe.names == ("warmup",)
    # one call each: base (first_layer L), a (shifted), b (depth 0), c (depth L-1; d shares it)
    assert sorted(c.names for c in calls) == [("a",), ("b",), ("base",), ("c",)]
    assert all(len(c.slots) == 1 for c in calls)


def test_without_a_bank_only_the_probe_runs() -> None:
    fake = FakeEncoder()
    warm_up(fake)
    assert [c.names for c in fake.calls] == [("warmup",)]
