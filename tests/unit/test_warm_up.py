"""Warm-up sets up every fan-out depth the loaded prefixes can need (for ONNX: one export per depth),
so that the first request after start pays for none of it."""

from __future__ import annotations

from service.engine.bank import PrefixBank
from service.engine.prefix import LoadedPrefix, base_prefix
from service.runtime import warm_up
from tests.support.fake_encoder import FAKE_SPEC, FakeEncoder
from tests.support.prefixes import trunk_prefix


def member(name: str, first: int, convention: str = "none", length: int = 2) -> LoadedPrefix:
    return trunk_prefix(FAKE_SPEC, name, first, length, seed=0, convention=convention)


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
