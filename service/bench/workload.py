"""What the service benchmark serves and sends: the model folder, random prefixes, texts, requests."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from service.bench.load import Call
from service.bench.texts import sample_texts
from service.engine.backbone import BackboneSpec
from service.registry.writer import native_bytes

Backbone = Literal["minilm", "bert-base"]


def bert_base_folder(folder: Path, tokenizer_from: Path) -> Path:
    """A BERT-base-sized backbone with random weights (speed only): 12 layers, hidden 768, 12 heads,
    FFN 3072, 512 positions; the tokenizer is copied from ``tokenizer_from``. Made once, then reused."""
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tokenizer_from, local_files_only=True)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_prefixes(folder: Path, spec: BackboneSpec, n: int, prefix_len: int, seed: int = 0) -> list[str]:
    """``n`` random native prefixes (K/V ~ N(0, 0.5^2)) for ``spec``; returns their names, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    shape = (spec.num_layers, spec.num_heads, prefix_len, spec.head_dim)
    names = []
    for i in range(n):
        name = f"bench{i:02d}"
        key, value = torch.randn(shape, generator=g) * 0.5, torch.randn(shape, generator=g) * 0.5
        meta = {"backbone_fingerprint": spec.fingerprint, "position_convention": "peft"}
        (folder / f"{name}.safetensors").write_bytes(native_bytes(key, value, meta))
        names.append(name)
    return names


def bench_texts(n: int, seq_len: int | None) -> list[str]:
    """Mixed-length texts (4-40 words); with ``seq_len``, long enough to be truncated to it."""
    if seq_len is None:
        return sample_texts(n)
    return sample_texts(n, min_words=seq_len + 8, max_words=seq_len + 40)


def embed_calls(texts: list[str], prefixes: list[str], encoding: str) -> list[Call]:
    """One ``POST /embed`` per text, asking for all ``prefixes``."""
    return [
        Call("/embed", {"inputs": t, "prefixes": prefixes, "encoding": encoding}, len(prefixes))
        for t in texts
    ]


def split_calls(texts: list[str], prefixes: list[str], encoding: str) -> list[Call]:
    """P ``POST /embed`` per text, one prefix each (texts outer, so a text's P requests arrive together)."""
    return [
        Call("/embed", {"inputs": t, "prefixes": [p], "encoding": encoding}, 1)
        for t in texts
        for p in prefixes
    ]


def openai_calls(texts: list[str], model: str, path: str = "/v1/embeddings") -> list[Call]:
    """One OpenAI-style request per text: the same body for our service and the peer."""
    return [Call(path, {"model": model, "input": [t], "encoding_format": "float"}, 1) for t in texts]
