"""MPNet with prefixes (the ``mpnet`` architecture adapter), on a tiny random-weight MPNet: equal to
MPNet written out by hand (tests/support/mpnet_reference.py) for mixed depths and lengths and every
pooling; the plain path equal to transformers' own MPNetModel; and the guards that refuse a model
whose layers would silently run without the bank."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModel

from service.engine.arch import architecture_for
from service.engine.arch.bert import BertFamily
from service.engine.arch.mpnet import MPNetFamily
from service.engine.attention import install_prefix_attention
from service.engine.backbone import Backbone
from service.engine.bank import PrefixBank
from service.engine.forward import PrefixedForward
from service.engine.prefix import BASE_NAME
from service.engine.torch_encoder import TorchEncoder
from tests.support.by_hand import worst_difference
from tests.support.mpnet_reference import TEXTS, reference
from tests.support.prefixes import base_vectors, mixed_depths, trunk_prefix

TOL = 1e-5


def token_ids(encoder: TorchEncoder, text: str) -> list[int]:
    batch = encoder.tokenize([text], max_length=encoder.max_input_tokens, truncate=True)
    return [int(i) for i in batch.input_ids[0, : batch.lengths[0]]]


def test_the_adapter_is_chosen_from_the_config(tiny_mpnet: Backbone) -> None:
    assert isinstance(tiny_mpnet.arch, MPNetFamily)
    assert isinstance(architecture_for("bert"), BertFamily)
    assert tiny_mpnet.spec.position_offset == 2  # MPNet's positions start after its padding index 1
    with pytest.raises(ValueError, match="unsupported architecture 'gpt2'; supported: .*mpnet"):
        architecture_for("gpt2")


@pytest.mark.parametrize("group_by_depth", [True, False])
@pytest.mark.parametrize("pooling", ["mean", "cls", "multilayer"])
def test_mpnet_prefixes_equal_the_layers_written_out(
    pooling: str, group_by_depth: bool, tiny_mpnet: Backbone
) -> None:
    encoder = TorchEncoder(
        tiny_mpnet, pooling=pooling, pooling_layers=2, chunk_rows=0, group_by_depth=group_by_depth
    )
    bank = PrefixBank.build(mixed_depths(tiny_mpnet.spec))
    batch = encoder.tokenize(TEXTS, max_length=encoder.max_input_tokens, truncate=True)
    assert max(batch.lengths) >= 33
    assert min(batch.lengths) <= 3
    got = encoder.encode(batch, bank, list(range(len(bank))))
    ids = [token_ids(encoder, text) for text in TEXTS]
    worst = worst_difference(got, ids, bank.prefixes, lambda t, p: reference(tiny_mpnet, t, p, pooling, 2))
    assert worst <= TOL
    # the prefixes matter, at every depth
    plain = base_vectors(encoder, batch)
    for j, p in enumerate(bank.prefixes):
        if not p.builtin:
            assert np.abs(got[:, j] - plain).max() > 1e-3, p.name
    np.testing.assert_allclose(got[:, bank.indices([BASE_NAME])[0]], plain, atol=TOL, rtol=0)


def test_the_prefix_slots_position_bias_rule_is_observable(tiny_mpnet: Backbone) -> None:
    """The rule (no bias on prefix slots) is what the engine does, and another rule would differ; the
    fixture's relative bias is large enough that dropping it would differ too."""
    encoder = TorchEncoder(tiny_mpnet, pooling="mean", chunk_rows=0)
    prefix = trunk_prefix(tiny_mpnet.spec, "p", 1, 4, seed=3)
    bank = PrefixBank.build([prefix])
    text = TEXTS[1]
    got = encoder.encode(encoder.tokenize([text], max_length=64, truncate=True), bank, [0])[0, 0]
    ids = token_ids(encoder, text)
    ours = reference(tiny_mpnet, ids, prefix, "mean")
    other = reference(tiny_mpnet, ids, prefix, "mean", prefix_bias="nearest")
    assert np.abs(got - ours).max() <= TOL
    assert np.abs(got - other).max() > 1e-3
    table = tiny_mpnet.model.encoder.relative_attention_bias.weight  # type: ignore[union-attr]
    saved = table.detach().clone()
    try:
        with torch.no_grad():
            table.zero_()
        no_bias = encoder.encode(encoder.tokenize([text], max_length=64, truncate=True), bank, [0])[0, 0]
    finally:
        with torch.no_grad():
            table.copy_(saved)
    assert np.abs(got - no_bias).max() > 1e-3


def test_plain_path_equals_transformers_mpnet(tiny_mpnet: Backbone) -> None:
    enc = tiny_mpnet.tokenizer(TEXTS, padding=True, return_tensors="pt", return_token_type_ids=False)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    ours = PrefixedForward(tiny_mpnet.model, tiny_mpnet.spec, "mean")(ids, mask)
    with torch.no_grad():
        hidden = tiny_mpnet.model(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    np.testing.assert_allclose(ours.numpy(), ((hidden * m).sum(1) / m.sum(1)).numpy(), atol=TOL, rtol=0)


def test_stock_mpnet_layers_drop_the_bank_so_the_guards_refuse(
    tiny_mpnet: Backbone, tiny_mpnet_path: Path, tiny_bert: Backbone
) -> None:
    """Why the guard exists: a stock MPNet layer given the bank as keyword arguments ignores it
    silently, so the attention-interface adapter (which relies on those arguments) must refuse MPNet,
    and switching MPNet to the registered prefix attention does not take."""
    model, spec = tiny_mpnet.model, tiny_mpnet.spec
    hidden = torch.randn(2, 5, spec.hidden_size)
    keys = torch.randn(1, spec.num_layers, spec.num_heads, 3, spec.head_dim)
    layer: Any = model.encoder.layer[0]  # type: ignore[index,union-attr]
    with torch.no_grad():
        stock = layer(hidden)[0]
        fed = layer(
            hidden, prefix_keys=keys, prefix_values=keys, prefix_index=torch.zeros(2, dtype=torch.long)
        )
    assert torch.equal(stock, fed[0])

    with pytest.raises(RuntimeError, match="model type 'mpnet' cannot run on the 'attention-interface'"):
        BertFamily().ensure(model)
    fresh = AutoModel.from_pretrained(tiny_mpnet_path, local_files_only=True)
    with pytest.raises(RuntimeError, match="prefixes would be silently ignored"):
        install_prefix_attention(fresh)
    with pytest.raises(RuntimeError, match="model type 'bert' cannot run on the 'mpnet'"):
        MPNetFamily().ensure(tiny_bert.model)
    # a forward that claims the wrong family refuses before computing anything
    wrong = PrefixedForward(model, tiny_bert.spec, "mean")
    ids = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(RuntimeError, match="silently ignored"):
        wrong(ids, torch.ones_like(ids))


def test_mpnet_adapter_refuses_a_model_without_its_layout(tiny_mpnet_path: Path) -> None:
    fresh: Any = AutoModel.from_pretrained(tiny_mpnet_path, local_files_only=True)
    fresh.encoder.layer[1].attention.attn.k = torch.nn.Identity()
    with pytest.raises(RuntimeError, match=r"MPNet layer 1 has no attention.attn.\{q,k,v,o\} projections"):
        MPNetFamily().ensure(fresh)
