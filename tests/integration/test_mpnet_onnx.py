"""MPNet on the ONNX backend (tiny random-weight MPNet): the exported graph, with the bank as graph
inputs, equals MPNet written out by hand for mixed depths and lengths and every pooling; a prefix
hot-loaded later needs no re-export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.backend import build_onnx_encoder
from service.engine.backbone import Backbone
from service.engine.bank import PrefixBank
from tests.support.by_hand import worst_difference
from tests.support.models import onnx_settings
from tests.support.mpnet_reference import TEXTS, reference
from tests.support.prefixes import mixed_depths, trunk_prefix

pytestmark = pytest.mark.slow  # ONNX exports
TOL = 1e-5


# one export per depth (3 with group_by_depth): several minutes on a loaded 2-core machine
@pytest.mark.timeout(1200)
@pytest.mark.parametrize(
    ("pooling", "group_by_depth"), [("mean", True), ("cls", False), ("multilayer", False)]
)
def test_mpnet_onnx_equals_the_layers_written_out(
    pooling: str,
    group_by_depth: bool,
    tiny_mpnet: Backbone,
    tiny_mpnet_path: Path,
    tmp_path: Path,
    count_exports: list[Path],
) -> None:
    settings = onnx_settings(tiny_mpnet_path, tmp_path, pooling=pooling, pooling_layers=2)
    encoder = build_onnx_encoder(settings)
    encoder.group_by_depth = group_by_depth
    members = mixed_depths(tiny_mpnet.spec)
    bank = PrefixBank.build(members)
    batch = encoder.tokenize(TEXTS, max_length=encoder.max_input_tokens, truncate=True)
    ids = [[int(i) for i in batch.input_ids[b, : batch.lengths[b]]] for b in range(len(TEXTS))]
    # the first call starts the deeper depths' exports in the background and runs at depth 0 (exact);
    # once they have landed the same call runs at each prefix's own depth
    for wait in (False, True):
        if wait:
            encoder.wait_for_exports()
        got = encoder.encode(batch, bank, list(range(len(bank))))
        worst = worst_difference(
            got, ids, bank.prefixes, lambda t, p: reference(tiny_mpnet, t, p, pooling, 2)
        )
        assert worst <= TOL
    layers = tiny_mpnet.spec.num_layers
    depths = sorted({0, *(range(layers) if group_by_depth else ())})
    assert encoder.exported_depths == depths
    exported = len(count_exports)

    # a new prefix (longer than any before) is a new bank input, not a new graph
    late = trunk_prefix(tiny_mpnet.spec, "late", 1, 9, seed=77)
    hot = PrefixBank.build([*members, late])
    # (with the other prefixes, so that the call runs at a depth already exported)
    vec = encoder.encode(batch, hot, list(range(len(hot))))[:, hot.indices(["late"])[0]]
    for b, text_ids in enumerate(ids):
        np.testing.assert_allclose(
            vec[b], reference(tiny_mpnet, text_ids, late, pooling, 2), atol=TOL, rtol=0
        )
    assert len(count_exports) == exported
