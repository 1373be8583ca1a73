"""One batched call equals the per-prefix, per-text computations, and costs exactly one model call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.engine.backbone import Backbone
from service.engine.bank import PrefixBank
from service.engine.prefix import LoadedPrefix
from service.engine.torch_encoder import TorchEncoder
from tests.support.prefixes import base_vectors, random_kv

TEXTS = [
    "short one",
    "a somewhat longer text about markets, interest rates and the weather",
    "the third text in the batch",
    "x",
    "Transformers encode text; prefixes steer what the encoder attends to for each task.",
]


def _prefixes(backbone: Backbone, lengths: list[int], convention: str = "peft") -> list[LoadedPrefix]:
    out = []
    for i, n in enumerate(lengths):
        key, value = random_kv(backbone.spec, n, seed=100 + i)
        out.append(LoadedPrefix(f"p{i}", f"d{i}", key, value, convention, "test", "native"))
    return out


def _count_calls(encoder: TorchEncoder) -> list[int]:
    """Calls of the engine's one forward module (each runs every layer once)."""
    calls: list[int] = []
    encoder.forward.register_forward_hook(lambda mod, args, out: calls.append(1))
    return calls


def _rows_into_layer(encoder: TorchEncoder, layer: int) -> list[int]:
    rows: list[int] = []
    module = encoder.backbone.model.encoder.layer[layer]
    module.register_forward_hook(lambda mod, args, out: rows.append(int(args[0].shape[0])))
    return rows


@pytest.fixture(scope="module")
def encoder(minilm: Backbone) -> TorchEncoder:
    return TorchEncoder(minilm, chunk_rows=0)


@pytest.mark.slow
def test_eight_prefixes_in_one_batch_equal_each_alone(encoder: TorchEncoder, minilm: Backbone) -> None:
    bank = PrefixBank.build(_prefixes(minilm, [8] * 8))
    batch = encoder.tokenize(TEXTS, max_length=128, truncate=True)
    together = encoder.encode(batch, bank, list(range(8)))
    assert together.shape == (len(TEXTS), 8, 384)
    for p in range(8):
        alone = encoder.encode(batch, bank, [p])[:, 0]
        np.testing.assert_allclose(together[:, p], alone, atol=1e-5, rtol=0)
    # different prefixes give different vectors
    assert np.abs(together[:, 0] - together[:, 1]).max() > 1e-2


def test_padded_texts_equal_each_text_alone(encoder: TorchEncoder, minilm: Backbone) -> None:
    bank = PrefixBank.build(_prefixes(minilm, [4, 4, 4]))
    batch = encoder.tokenize(TEXTS, max_length=128, truncate=True)
    assert len(set(batch.lengths)) > 1  # the batch really is padded
    together = encoder.encode(batch, bank, [2, 0, 1])
    for i, text in enumerate(TEXTS):
        alone = encoder.encode(encoder.tokenize([text], max_length=128, truncate=True), bank, [2, 0, 1])[0]
        np.testing.assert_allclose(together[i], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("convention", ["peft", "none"])
def test_prefixes_of_different_lengths_equal_each_alone(
    encoder: TorchEncoder, minilm: Backbone, convention: str
) -> None:
    prefixes = _prefixes(minilm, [1, 5, 16, 9], convention)
    bank = PrefixBank.build(prefixes)
    assert bank.keys.shape[3] == 16  # padded to the longest
    batch = encoder.tokenize(TEXTS, max_length=128, truncate=True)
    together = encoder.encode(batch, bank, [0, 1, 2, 3])
    for p, prefix in enumerate(prefixes):
        alone = encoder.encode(batch, PrefixBank.build([prefix]), [0])[:, 0]
        np.testing.assert_allclose(together[:, p], alone, atol=1e-5, rtol=0)


def test_b_texts_times_p_prefixes_is_one_model_call(minilm: Backbone) -> None:
    encoder = TorchEncoder(minilm, chunk_rows=0)
    calls = _count_calls(encoder)
    bank = PrefixBank.build(_prefixes(minilm, [4, 8, 2, 6, 3]))
    batch = encoder.tokenize(TEXTS, max_length=128, truncate=True)
    rows = _rows_into_layer(encoder, 0)
    encoder.encode(batch, bank, [0, 1, 2, 3, 4])
    assert len(calls) == 1
    assert encoder.forward_calls == 1
    assert rows == [len(TEXTS) * 5]  # layer 0 ran once, on every (text, prefix) row


def test_cpu_chunking_keeps_all_prefixes_of_a_text_in_one_call(minilm: Backbone) -> None:
    bank = PrefixBank.build(_prefixes(minilm, [4, 4, 4]))
    batch = TorchEncoder(minilm, chunk_rows=0).tokenize(TEXTS, max_length=128, truncate=True)
    whole = TorchEncoder(minilm, chunk_rows=0).encode(batch, bank, [0, 1, 2])
    chunked_enc = TorchEncoder(minilm, chunk_rows=6)  # 6 rows = 2 texts x 3 prefixes per call
    rows_seen: list[int] = []
    chunked_enc.set_observer(lambda call: rows_seen.append(call.rows))
    chunked = chunked_enc.encode(batch, bank, [0, 1, 2])
    assert rows_seen == [6, 6, 3]
    np.testing.assert_allclose(chunked, whole, atol=1e-5, rtol=0)


def test_guard_fails_loudly_when_prefix_attention_is_not_active(tiny_bert_path) -> None:
    from service.engine.backbone import load_backbone

    backbone = load_backbone(tiny_bert_path, "cpu", "float32")
    encoder = TorchEncoder(backbone, chunk_rows=0)
    bank = PrefixBank.build(_prefixes(backbone, [3]))
    batch = encoder.tokenize(["hello there"], max_length=32, truncate=True)
    encoder.encode(batch, bank, [0])  # fine while active
    backbone.model.set_attn_implementation("sdpa")  # stock SDPA would silently drop the prefix
    with pytest.raises(RuntimeError, match="prefix attention is not active"):
        encoder.encode(batch, bank, [0])


def test_plain_backbone_equals_transformers(minilm: Backbone, minilm_path) -> None:
    from transformers import AutoModel

    encoder = TorchEncoder(minilm, chunk_rows=0)
    batch = encoder.tokenize(TEXTS, max_length=128, truncate=True)
    ref_model = AutoModel.from_pretrained(minilm_path, add_pooling_layer=False).eval()
    ids, mask = torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)
    with torch.no_grad():
        h = ref_model(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    ref = ((h * m).sum(1) / m.sum(1)).numpy()
    np.testing.assert_allclose(base_vectors(encoder, batch), ref, atol=1e-5, rtol=0)
