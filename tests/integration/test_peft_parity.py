"""The engine reproduces PEFT's own PrefixTuning outputs (the reference implementation)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel, PrefixTuningConfig, TaskType, get_peft_model
from transformers import AutoModel, AutoTokenizer

from service.engine.backbone import load_backbone
from service.engine.bank import PrefixBank
from service.engine.torch_encoder import TorchEncoder
from service.registry.limits import PrefixLimits
from service.registry.loader import load_prefix
from tests.support.prefixes import base_vectors

TEXTS = [
    "The movie was wonderful.",
    "Stocks fell sharply after the central bank raised interest rates again this morning.",
    "why?",
    "A considerably longer sentence, with punctuation; numbers like 42 and 3.14, and rare words: zeugma.",
]


def _reference(model: torch.nn.Module, tok_path: Path, pooling: str) -> torch.Tensor:
    tok = AutoTokenizer.from_pretrained(tok_path)
    enc = tok(TEXTS, padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, output_hidden_states=True)
    if pooling == "cls":
        return out.last_hidden_state[:, 0]
    m = enc.attention_mask.unsqueeze(-1).float()
    if pooling == "mean":
        return (out.last_hidden_state * m).sum(1) / m.sum(1)
    # multilayer: mean of the last 4 layers' mean-pooled states
    return torch.stack([(h * m).sum(1) / m.sum(1) for h in out.hidden_states[-4:]]).mean(0)


def _make_adapter(model_path: Path, out: Path, n_tokens: int, projection: bool, seed: int) -> torch.nn.Module:
    """A PEFT PrefixTuning model with non-trivial random parameters, saved with save_pretrained."""
    torch.manual_seed(seed)
    base = AutoModel.from_pretrained(model_path, add_pooling_layer=False)
    cfg = PrefixTuningConfig(
        task_type=TaskType.FEATURE_EXTRACTION,
        num_virtual_tokens=n_tokens,
        prefix_projection=projection,
        encoder_hidden_size=48,
    )
    peft_model = get_peft_model(base, cfg)
    with torch.no_grad():
        for p in peft_model.prompt_encoder.parameters():
            p.normal_(0, 0.4)
    peft_model.eval()
    peft_model.save_pretrained(out)
    return peft_model


def _engine(model_path: Path, pooling: str) -> TorchEncoder:
    return TorchEncoder(load_backbone(model_path, "cpu", "float32"), pooling=pooling, chunk_rows=0)


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["mean", "cls", "multilayer"])
@pytest.mark.parametrize("family", ["minilm", "roberta"])
def test_engine_equals_peft(
    family: str, pooling: str, minilm_path: Path, tiny_roberta_path: Path, tmp_path: Path
) -> None:
    model_path = minilm_path if family == "minilm" else tiny_roberta_path
    adapter = tmp_path / "sentiment"
    peft_model = _make_adapter(model_path, adapter, n_tokens=6, projection=False, seed=1)
    ref = _reference(peft_model, model_path, pooling)

    enc = _engine(model_path, pooling)
    prefix = load_prefix(adapter, enc.spec, PrefixLimits(max_prefix_len=64, max_file_bytes=1 << 26))
    assert prefix.kind == "peft"
    assert prefix.position_convention == "peft"
    bank = PrefixBank.build([prefix])
    batch = enc.tokenize(TEXTS, max_length=64, truncate=True)
    got = torch.from_numpy(enc.encode(batch, bank, [0])[:, 0])
    assert (got - ref).abs().max().item() <= 1e-5
    # and the prefix really changes the output (the engine is not just the plain backbone)
    plain = torch.from_numpy(base_vectors(enc, batch))
    assert (plain - ref).abs().max().item() > 1e-2


@pytest.mark.slow
def test_prefix_projection_adapter_equals_training_model(minilm_path: Path, tmp_path: Path) -> None:
    """An adapter trained with prefix_projection is saved projected; served, it equals the model with its MLP."""
    peft_model = _make_adapter(minilm_path, tmp_path / "proj", n_tokens=5, projection=True, seed=2)
    assert peft_model.peft_config["default"].prefix_projection
    ref = _reference(peft_model, minilm_path, "mean")

    enc = _engine(minilm_path, "mean")
    bank = PrefixBank.build(
        [load_prefix(tmp_path / "proj", enc.spec, PrefixLimits(max_prefix_len=64, max_file_bytes=1 << 26))]
    )
    batch = enc.tokenize(TEXTS, max_length=64, truncate=True)
    got = torch.from_numpy(enc.encode(batch, bank, [0])[:, 0])
    assert (got - ref).abs().max().item() <= 1e-5

    # PEFT's own loader of the saved folder agrees as well
    base = AutoModel.from_pretrained(minilm_path, add_pooling_layer=False)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "proj").eval()
    assert (_reference(reloaded, minilm_path, "mean") - got).abs().max().item() <= 1e-5
