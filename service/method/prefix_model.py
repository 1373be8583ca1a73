"""The PEFT PrefixTuning model a prefix is trained in, and its conversion to the native K/V layout.

PEFT passes the prefix as ``past_key_values``, so BERT shifts text position ids by ``prefix_len``
(the "peft" position convention the engine serves). Token type ids are not passed (PEFT drops them
for prompt learning; the engine has none either), so a text pair is ``[CLS] a [SEP] b [SEP]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from peft import PeftModel, PrefixTuningConfig, TaskType, get_peft_model
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from service.engine.backbone import BackboneSpec, spec_from_config, weights_digest
from service.engine.pooling import mean_pool
from service.method.trunk import tokenize
from service.registry.init_record import normal_prompt
from service.registry.peft import prompt_to_kv

ADAPTER = "default"


@dataclass
class PrefixModel:
    """A frozen backbone wrapped by PEFT with one trainable prefix."""

    peft: PeftModel
    tokenizer: PreTrainedTokenizerBase
    spec: BackboneSpec
    prefix_len: int
    projection: bool

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.peft.parameters() if p.requires_grad]

    def tokenize(self, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int) -> dict[str, Any]:
        return tokenize(self.tokenizer, texts, pairs, max_length)

    def pooled(self, enc: dict[str, Any]) -> torch.Tensor:
        """Mean-pooled final states of the text tokens [B, hidden] (the engine's ``mean`` pooling)."""
        out = self.peft(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        return mean_pool(out.last_hidden_state, enc["attention_mask"])

    def base_pooled(self, enc: dict[str, Any]) -> torch.Tensor:
        """The same texts through the plain backbone (no prefix, unshifted positions): ``base``."""
        out = self.peft.get_base_model()(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        return mean_pool(out.last_hidden_state, enc["attention_mask"])

    def prompt_weight(self) -> torch.Tensor:
        """The prefix as PEFT saves it, [Lp, layers*2*hidden]: with ``prefix_projection`` this is the
        projected prefix (the MLP output), which is what attention sees."""
        return self.peft.get_prompt_embedding_to_save(ADAPTER).detach().to(torch.float32).cpu()

    def key_value(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Native layout: key, value [layers, heads, Lp, head_dim]."""
        return prompt_to_kv(
            self.prompt_weight(), self.spec.num_layers, self.spec.num_heads, self.spec.head_dim
        )


def build_prefix_model(
    model_path: Path,
    prefix_len: int,
    *,
    seed: int = 0,
    init_std: float = 0.5,
    projection: bool = False,
    projection_hidden: int = 256,
) -> PrefixModel:
    """Load the backbone (frozen, eval mode: no dropout, as served) and wrap it in PEFT PrefixTuning."""
    model_path = Path(model_path)
    config = AutoConfig.from_pretrained(model_path, local_files_only=True)
    spec = spec_from_config(config, weights_digest(model_path))
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    torch.manual_seed(seed)  # the projection MLP's initialization
    base = AutoModel.from_pretrained(
        model_path, local_files_only=True, add_pooling_layer=False, attn_implementation="sdpa"
    )
    peft_config = PrefixTuningConfig(
        task_type=TaskType.FEATURE_EXTRACTION,
        num_virtual_tokens=prefix_len,
        prefix_projection=projection,
        encoder_hidden_size=projection_hidden,
    )
    peft = get_peft_model(base, peft_config)
    emb = _embedding(peft)
    with torch.no_grad():
        if projection:
            torch.nn.init.normal_(emb.weight, std=init_std, generator=torch.Generator().manual_seed(seed))
        else:
            emb.weight.copy_(normal_prompt(spec.num_layers, spec.hidden_size, prefix_len, seed, init_std))
    peft.eval()
    return PrefixModel(peft, tokenizer, spec, prefix_len, projection)


def _embedding(peft: PeftModel) -> torch.nn.Embedding:
    """The prefix's parameter table (PEFT's ``PrefixEncoder.embedding``)."""
    return cast(torch.nn.Embedding, peft.prompt_encoder[ADAPTER].embedding)


def load_prompt(model: PrefixModel, key: torch.Tensor, value: torch.Tensor) -> None:
    """Put native K/V back into a (non-projection) PEFT model: the inverse of :meth:`key_value`."""
    if model.projection:
        raise ValueError("cannot load a flat prefix into a prefix_projection model")
    kv = torch.stack([key, value], dim=1)  # [layers, 2, heads, Lp, head_dim]
    w = kv.permute(3, 0, 1, 2, 4).reshape(model.prefix_len, -1)
    with torch.no_grad():
        _embedding(model.peft).weight.copy_(w)
