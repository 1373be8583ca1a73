"""A shipped head is fitted on the splits its prefix was trained on (service/method/head_fit.py
``SplitRecipe.of_prefix``): the data protocol the prefix file records, checked by its train digest."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.method.head_fit import SplitRecipe
from service.registry.limits import PrefixLimits
from service.registry.tensors import decode_metadata, parse_safetensors

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("path", "pool"),
    [
        ("prefixes-all-mpnet-base-v2/question-type.safetensors", 2000),  # the mpnet depth table's pool
        ("prefixes/question-type.safetensors", 3764),  # MiniLM: every example left after the holdout
    ],
)
def test_the_splits_are_the_ones_the_prefix_records(path: str, pool: int) -> None:
    _, raw, _ = parse_safetensors((ROOT / path).read_bytes(), path, PrefixLimits())
    meta = decode_metadata(raw, path, PrefixLimits())
    recipe = SplitRecipe.of_prefix(meta)
    assert (recipe.loader, recipe.pool_max, recipe.dev_fraction, recipe.holdout) == ("trec", pool, 0.15, 0.3)
    train, dev, test = recipe.splits(meta["task"])
    assert train.digest() == meta["data"]["train_digest"]
    assert (len(train), len(dev)) == (meta["data"]["n_train"], meta["data"]["n_dev"])
    assert len(test) == 1000
