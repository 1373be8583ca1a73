"""Prefix attention: every row attends to [its prefix's K/V ; its own text K/V].

Registered as a transformers attention implementation (plus the SDPA mask function, without
which transformers hands custom implementations no padding mask). The per-row prefix K/V and
key mask reach this function as keyword arguments of ``model(...)``; stock SDPA would silently
ignore them, so :func:`ensure_prefix_attention` guards every forward call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ATTN_IMPLEMENTATION = "prefix_embed_sdpa"


def prefix_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    prefix_keys: torch.Tensor | None = None,
    prefix_values: torch.Tensor | None = None,
    prefix_index: torch.Tensor | None = None,
    key_mask: torch.Tensor | None = None,
    **_: Any,
) -> tuple[torch.Tensor, None]:
    """query/key/value: [rows, heads, T, head_dim]; prefix_keys/values: [P, layers, heads, Lp, head_dim].

    ``key_mask`` [rows, 1, 1, Lp + T] (bool, True = attend; or additive float, 0 / -inf, as
    ``forward.additive_mask`` builds it) replaces the model's mask when given:
    it is built once per forward call instead of once per layer.
    """
    if prefix_keys is not None and prefix_values is not None and prefix_index is not None:
        layer = int(module.layer_idx)  # type: ignore[arg-type]
        key = torch.cat([prefix_keys[:, layer][prefix_index], key], dim=2)
        value = torch.cat([prefix_values[:, layer][prefix_index], value], dim=2)
    mask = key_mask if key_mask is not None else attention_mask
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout if module.training else 0.0, scale=scaling
    )
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    # transformers' modeling stack (and what it imports: scipy, accelerate, sympy: ~130 MB resident) is
    # imported only where a torch model is built, not by an ONNX-only server.
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, prefix_sdpa_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)


def install_prefix_attention(model: PreTrainedModel) -> None:
    """Register the implementation (idempotent) and switch ``model`` to it."""
    _register()
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    ensure_prefix_attention(model)


def ensure_prefix_attention(model: PreTrainedModel) -> None:
    """Fail loudly if the model would run stock attention (which drops the prefixes silently)."""
    active = getattr(model.config, "_attn_implementation", None)
    if active != ATTN_IMPLEMENTATION:
        raise RuntimeError(
            f"prefix attention is not active on this model (attention implementation is {active!r}, "
            f"expected {ATTN_IMPLEMENTATION!r}): prefixes would be silently ignored"
        )
    missing = [
        name
        for name, mod in model.named_modules()
        if name.endswith("attention.self") and getattr(mod, "layer_idx", None) is None
    ]
    if missing:
        raise RuntimeError(f"attention modules without layer_idx, prefixes cannot be routed: {missing[:3]}")
