"""The two kinds of trainable prefix behind the one training loop (service/method/train.py).

- :class:`TrunkLearner` (``first_layer`` = S): native key/value tensors for layers S..L-1, trained
  over a cached trunk: layers 0..S-1 run once per text without gradients
  (:mod:`service.method.trunk`), each step runs only the top L-S layers, through the engine's own
  layer calls and key mask.
- :class:`PeftLearner` (``first_layer`` None): PEFT PrefixTuning on the frozen backbone, all layers,
  text positions shifted by the prefix length (the ``peft`` position convention).

Both give the loop the same things: the trainable parameters, the pooled vectors of a batch of
training examples (with gradients), the vectors of a split or of other texts (without), the base
vectors (the plain backbone), and the prefix in the native layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from service.engine.backbone import Backbone, BackboneSpec
from service.method.data import TaskData
from service.method.init import token_kv
from service.method.prefix_model import PrefixModel, build_prefix_model
from service.method.recipe import TrainConfig
from service.method.trunk import TrunkCache, build_trunk_cache, pooled_all, top_pooled
from service.registry.init_record import normal_kv

Split = tuple[TaskData, TaskData]  # (train, dev)


class Learner(Protocol):
    spec: BackboneSpec

    def trainable(self) -> list[nn.Parameter]: ...

    def key_value(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The prefix now, native layout [layers - S, heads, Lp, head_dim]."""
        ...

    def batch(self, task: str, idx: Sequence[int]) -> torch.Tensor:
        """Pooled vectors [B, hidden] of training examples ``idx`` of ``task``, with gradients."""
        ...

    def base_batch(self, task: str, idx: Sequence[int]) -> torch.Tensor:
        """The same examples' base vectors (the plain backbone), without gradients."""
        ...

    def vectors(self, task: str, part: int) -> torch.Tensor:
        """Pooled vectors of a whole split (``part`` 0: train, 1: dev), without gradients."""
        ...

    def base(self, task: str, part: int) -> torch.Tensor:
        """The base vectors of a whole split."""
        ...

    def encode(self, data: TaskData) -> tuple[torch.Tensor, torch.Tensor]:
        """(prefixed, base) vectors of other texts, without gradients."""
        ...


class TrunkPrefix(nn.Module):
    """The trainable native prefix: K/V tensors, or an MLP-reparameterized table (``projection``)."""

    def __init__(self, backbone: Backbone, cfg: TrainConfig):
        super().__init__()
        spec, first = backbone.spec, int(cfg.first_layer or 0)
        self.layers = spec.num_layers - first
        self.shape = (self.layers, spec.num_heads, cfg.prefix_len, spec.head_dim)
        self.projection: nn.Module | None = None
        if cfg.projection:
            h = spec.hidden_size
            g = torch.Generator().manual_seed(cfg.seed)
            self.table = nn.Parameter(torch.randn(cfg.prefix_len, h, generator=g) * cfg.init_std)
            torch.manual_seed(cfg.seed)
            self.projection = nn.Sequential(
                nn.Linear(h, cfg.projection_hidden),
                nn.Tanh(),
                nn.Linear(cfg.projection_hidden, self.layers * 2 * h),
            )
            return
        if cfg.init == "tokens":
            key, value = token_kv(backbone, first, cfg.prefix_len, cfg.seed)
        else:
            key, value = normal_kv(self.shape, cfg.seed, cfg.init_std)
        self.key = nn.Parameter(key.clone())
        self.value = nn.Parameter(value.clone())

    def kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.projection is None:
            return self.key, self.value
        lp = self.shape[2]
        out = self.projection(self.table).view(lp, self.layers, 2, self.shape[1], self.shape[3])
        kv = out.permute(1, 2, 3, 0, 4)  # [layers, 2, heads, Lp, head_dim]
        return kv[:, 0], kv[:, 1]


class TrunkLearner:
    """A native prefix at depth S over trunk caches: ``caches`` (data digest -> cache built at the run's
    ``max_length``, e.g. shared by the runs of an experiment) are used where they hold depth S, the
    others are built here (and kept: a test split is run through the trunk once)."""

    def __init__(
        self,
        backbone: Backbone,
        tasks: dict[str, Split],
        cfg: TrainConfig,
        caches: dict[str, TrunkCache] | None = None,
    ):
        self.backbone, self.spec, self.cfg = backbone, backbone.spec, cfg
        self.first = int(cfg.first_layer or 0)
        if not 0 <= self.first < self.spec.num_layers:
            raise ValueError(f"first_layer {self.first} outside 0..{self.spec.num_layers - 1}")
        self.known = dict(caches or {})
        self.caches = {name: (self._cache(train), self._cache(dev)) for name, (train, dev) in tasks.items()}
        torch.manual_seed(cfg.seed)
        self.prefix = TrunkPrefix(backbone, cfg)

    def _cache(self, data: TaskData) -> TrunkCache:
        key = data.digest()
        cache = self.known.get(key)
        if cache is None or self.first not in cache.states:
            cache = build_trunk_cache(
                self.backbone, data.texts, data.pairs, [self.first], self.cfg.max_length
            )
            self.known[key] = cache
        return cache

    def trainable(self) -> list[nn.Parameter]:
        return list(self.prefix.parameters())

    def key_value(self) -> tuple[torch.Tensor, torch.Tensor]:
        key, value = self.prefix.kv()
        return key.detach().clone(), value.detach().clone()

    def batch(self, task: str, idx: Sequence[int]) -> torch.Tensor:
        hidden, mask = self.caches[task][0].batch(self.first, idx)
        return top_pooled(self.backbone, hidden, mask, self.first, *self.prefix.kv())

    def base_batch(self, task: str, idx: Sequence[int]) -> torch.Tensor:
        return self.caches[task][0].base[list(idx)]

    def vectors(self, task: str, part: int) -> torch.Tensor:
        return self._pooled(self.caches[task][part])

    def base(self, task: str, part: int) -> torch.Tensor:
        return self.caches[task][part].base

    def _pooled(self, cache: TrunkCache) -> torch.Tensor:
        with torch.no_grad():
            return pooled_all(self.backbone, cache, self.first, *self.prefix.kv())

    def encode(self, data: TaskData) -> tuple[torch.Tensor, torch.Tensor]:
        cache = self._cache(data)
        return self._pooled(cache), cache.base


class PeftLearner:
    """PEFT PrefixTuning (all layers, shifted positions) on its own copy of the backbone."""

    def __init__(self, model: PrefixModel, tasks: dict[str, Split], cfg: TrainConfig):
        self.model, self.spec, self.tasks, self.max_length = model, model.spec, tasks, cfg.max_length

    @classmethod
    def build(cls, path: Path, tasks: dict[str, Split], cfg: TrainConfig) -> PeftLearner:
        torch.manual_seed(cfg.seed)
        model = build_prefix_model(
            path, cfg.prefix_len, seed=cfg.seed, init_std=cfg.init_std,
            projection=cfg.projection, projection_hidden=cfg.projection_hidden,
        )  # fmt: skip
        room = model.spec.max_text_positions - cfg.prefix_len  # PEFT shifts text positions by Lp
        if cfg.max_length > room:
            raise ValueError(
                f"max_length {cfg.max_length} > {room}: PEFT positions leave a text {room} tokens"
            )
        return cls(model, tasks, cfg)

    def trainable(self) -> list[nn.Parameter]:
        return self.model.trainable()

    def key_value(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.key_value()

    def batch(self, task: str, idx: Sequence[int]) -> torch.Tensor:
        data = self.tasks[task][0]
        pairs = [data.pairs[i] for i in idx] if data.pairs else None
        return self.model.pooled(self.model.tokenize([data.texts[i] for i in idx], pairs, self.max_length))

    def base_batch(self, task: str, idx: Sequence[int]) -> torch.Tensor:
        data = self.tasks[task][0]
        pairs = [data.pairs[i] for i in idx] if data.pairs else None
        with torch.no_grad():
            enc = self.model.tokenize([data.texts[i] for i in idx], pairs, self.max_length)
            return self.model.base_pooled(enc)

    def vectors(self, task: str, part: int) -> torch.Tensor:
        return self._pooled(self.tasks[task][part], base=False)

    def base(self, task: str, part: int) -> torch.Tensor:
        return self._pooled(self.tasks[task][part], base=True)

    def encode(self, data: TaskData) -> tuple[torch.Tensor, torch.Tensor]:
        return self._pooled(data, base=False), self._pooled(data, base=True)

    @torch.no_grad()
    def _pooled(self, data: TaskData, *, base: bool, batch: int = 64) -> torch.Tensor:
        out = []
        for i in range(0, len(data), batch):
            pairs = data.pairs[i : i + batch] if data.pairs else None
            enc = self.model.tokenize(data.texts[i : i + batch], pairs, self.max_length)
            out.append(self.model.base_pooled(enc) if base else self.model.pooled(enc))
        return torch.cat(out) if out else torch.zeros(0, self.spec.hidden_size)
