"""The seam between the engine and one model family: how its layers run with a prefix bank.

:class:`~service.engine.forward.PrefixedForward` drives a backbone layer by layer (embeddings, then
each layer, so rows can fan out from their texts between layers). Families differ in how a layer
takes the prefix: BERT-like models route attention through transformers' pluggable attention
interface (``bert.py``); MPNet computes attention inside its own module, with a relative position
bias, so its adapter runs that module's projections itself (``mpnet.py``). Each adapter also guards:
it refuses a model whose layers would not see the bank (stock attention drops extra keyword
arguments without a word).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class LayerPrefix:
    """The prefix bank of one call and each row's slot in it.

    ``keys``/``values``: [P, layers, heads, Lp, head_dim] (zeros in layers a prefix does not act in;
    those slots are masked by the key mask); ``index``: [rows], row r uses slot ``index[r]``."""

    keys: torch.Tensor
    values: torch.Tensor
    index: torch.Tensor

    @property
    def length(self) -> int:
        """Padded prefix length Lp (key slots in front of every row's text keys)."""
        return int(self.keys.shape[3])

    def layer_kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row [rows, heads, Lp, head_dim] keys and values of ``layer``."""
        return self.keys[:, layer][self.index], self.values[:, layer][self.index]


class Architecture(ABC):
    """How the engine runs one family of encoders (selected by ``config.model_type``)."""

    name: ClassVar[str]
    model_types: ClassVar[frozenset[str]]

    @abstractmethod
    def position_offset(self, model_type: str, pad_token_id: int) -> int:
        """The first text position id (0 for BERT; the padding index + 1 where positions start after it)."""

    def install(self, model: nn.Module) -> None:
        """Prepare a freshly loaded model for prefix attention, then check it (:meth:`ensure`)."""
        self.ensure(model)

    def ensure(self, model: nn.Module) -> None:
        """Raise if ``model`` is not of this family or would silently run without the bank."""
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in self.model_types:
            raise RuntimeError(
                f"model type {model_type!r} cannot run on the {self.name!r} prefix adapter "
                f"(it serves {', '.join(sorted(self.model_types))}): prefixes would be silently ignored"
            )

    def embed(self, model: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Token + position embeddings (no token type ids: the engine passes none)."""
        embeddings: Any = model.embeddings
        return embeddings(input_ids=input_ids, position_ids=position_ids)

    def call_state(self, model: nn.Module, hidden: torch.Tensor, prefix_len: int) -> Any:
        """What every layer of one call shares (e.g. a position bias), from the embeddings' output
        [rows, T, hidden] and the call's padded prefix length. None where nothing is shared."""
        return None

    @abstractmethod
    def layer(
        self,
        model: nn.Module,
        i: int,
        hidden: torch.Tensor,
        key_mask: torch.Tensor,
        state: Any,
        prefix: LayerPrefix | None,
    ) -> torch.Tensor:
        """Layer ``i`` on ``hidden`` [rows, T, hidden]. ``key_mask`` [rows, 1, 1, Lp + T] (additive
        float, 0 / -inf; Lp = 0 without ``prefix``) hides padding and inactive prefix slots."""

    @abstractmethod
    def kv_projections(self, model: nn.Module, i: int) -> tuple[nn.Module, nn.Module]:
        """Layer ``i``'s key and value projections (hidden -> heads * head_dim), e.g. to start a
        prefix from the keys/values real tokens have."""
