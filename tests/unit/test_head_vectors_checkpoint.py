"""The heads experiment's vector cache resumes a stopped encoding from its checkpoint: the resumed
vectors equal an uninterrupted run's, only the texts not yet done are encoded again, and a checkpoint
of other texts is ignored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.method.experiments import heads
from tests.support.fake_encoder import FakeEncoder, fake_bank

NAMES = ["base", "task"]
TEXTS = [" ".join(["w"] * (1 + i % 7) + [f"t{i}"]) for i in range(23)]  # lengths 2-8 words, 23 texts


class Stop(Exception):
    """Stands for the run being killed mid-encoding."""


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heads, "BATCH", 3)
    monkeypatch.setattr(heads, "CHECKPOINT_BATCHES", 2)


def encoded(enc: FakeEncoder) -> list[str]:
    return [t for call in enc.calls for t in call.texts]


def test_a_stopped_encoding_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    bank = fake_bank(NAMES)
    whole = heads.vectors(FakeEncoder(), bank, NAMES, TEXTS, tmp_path / "whole.npy")

    cache = tmp_path / "stopped.npy"
    longest = max(TEXTS, key=len)  # in the last length-sorted batch
    enc = FakeEncoder()
    enc.fail_with, enc.fail_when = Stop(), lambda texts: longest in texts
    with pytest.raises(Stop):
        heads.vectors(enc, bank, NAMES, TEXTS, cache)
    assert not cache.exists()
    partial = tmp_path / "stopped.partial.npz"
    assert partial.is_file()
    done = int(np.load(partial)["done"])
    assert done == 18  # 7 batches of 3 ran (the 8th failed); checkpoints after batches 2, 4, 6

    again = FakeEncoder()
    got = heads.vectors(again, bank, NAMES, TEXTS, cache)
    np.testing.assert_array_equal(got, whole)
    assert len(encoded(again)) == len(TEXTS) - done  # only what the checkpoint lacked
    assert cache.is_file()
    assert not partial.exists()
    np.testing.assert_array_equal(np.load(cache), whole)


def test_a_checkpoint_of_other_texts_is_not_used(tmp_path: Path) -> None:
    bank = fake_bank(NAMES)
    cache = tmp_path / "v.npy"
    enc = FakeEncoder()
    enc.fail_with, enc.fail_when = Stop(), lambda texts: max(TEXTS, key=len) in texts
    with pytest.raises(Stop):
        heads.vectors(enc, bank, NAMES, TEXTS, cache)
    other = [t + " x" for t in TEXTS]
    fresh = FakeEncoder()
    got = heads.vectors(fresh, bank, NAMES, other, cache)
    assert len(encoded(fresh)) == len(other)  # started over
    np.testing.assert_array_equal(got, heads.vectors(FakeEncoder(), bank, NAMES, other, tmp_path / "o.npy"))
