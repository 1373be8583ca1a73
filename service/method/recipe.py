"""One training configuration (the prefix, the optimisation, the data protocol) and the named recipes.

``shipped`` (the default of ``train``) is the recipe of the prefixes in ``prefixes/``, read from
their metadata: a native prefix in layers 3..L-1 over a cached trunk (``first_layer`` 3, so it shares
the trunk with ``base`` and every shipped prefix), 16 virtual tokens, AdamW lr 1e-2 (prefix) and
5e-3 (head), batch 16, 300 steps with a cosine schedule, a dev check every 50 steps, texts cut to
64 tokens; data: a 30 % test split by document held out first (the source value is measured on
it), then at most 8,000 examples split 85/15 into train/dev. ``peft`` is the older all-layer PEFT
PrefixTuning recipe (``first_layer`` None: positions shifted, so a call that includes such a prefix
runs every layer per prefix). :func:`like` rebuilds the configuration a prefix file records.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

INITS = ("normal", "tokens")
SCHEDULES = ("constant", "cosine")
HEAD_INITS = ("probe", "random")
DATA_FIELDS = ("max_examples", "dev_fraction", "holdout")  # the data protocol (metadata ``data``)
EXPERIMENT_HOLDOUT = 0.3  # every file with a measured ``source_value`` held out this test fraction


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a trained prefix, given its data and seed (defaults: ``shipped``)."""

    first_layer: int | None = 3  # S: acts in layers S..L-1, positions unshifted; None: PEFT, all layers
    prefix_len: int = 16
    max_length: int = 64  # tokens per text (training, dev and source-value vectors)
    batch_size: int = 16
    lr: float = 1e-2  # the prefix's learning rate
    head_lr: float = 5e-3
    weight_decay: float = 0.0
    max_steps: int = 300
    eval_every: int = 50  # dev check; the best dev macro-F1 is kept
    patience: int = 4  # checks without a better dev score before stopping
    seed: int = 0  # data subsample and split, initial prefix, batches
    init: str = "normal"  # normal: N(0, init_std^2) | tokens: real tokens' keys/values (native only)
    init_std: float = 0.5
    head_init: str = "probe"  # probe: the head starts as a logistic regression (LP-FT) | random
    projection: bool = False  # train through an MLP reparameterization; the file holds its output
    projection_hidden: int = 256
    preserve: float = 0.0  # weight of 1 - cos(prefixed, base) (native only)
    schedule: str = "cosine"  # constant | cosine (10 % linear warm-up, then cosine decay to 0)
    checkpoint_steps: tuple[int, ...] = ()  # also keep the prefix after these steps
    max_examples: int | None = 8000  # train + dev, after the holdout
    dev_fraction: float = 0.15
    holdout: float = 0.3  # test fraction kept out first (by document, fixed seed); 0: none

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("init", self.init, INITS),
            ("schedule", self.schedule, SCHEDULES),
            ("head_init", self.head_init, HEAD_INITS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} {value!r} not in {allowed}")
        if self.preserve < 0:
            raise ValueError("preserve must be >= 0")
        if self.first_layer is not None and self.first_layer < 0:
            raise ValueError(f"first_layer {self.first_layer} must be >= 0")
        if self.first_layer is None and (self.init != "normal" or self.preserve):
            raise ValueError("init tokens and preserve need a native prefix (a first_layer)")
        if not 0 <= self.holdout < 1 or not 0 < self.dev_fraction < 1:
            raise ValueError("holdout must be in [0, 1) and dev_fraction in (0, 1)")
        for name in ("prefix_len", "max_length", "batch_size", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    @property
    def peft(self) -> bool:
        return self.first_layer is None

    def training_record(self) -> dict[str, Any]:
        """The metadata ``training`` fields of this configuration (the data protocol goes to ``data``)."""
        out = asdict(self)
        for f in DATA_FIELDS:
            out.pop(f)
        out["checkpoint_steps"] = list(self.checkpoint_steps)
        return out

    def data_record(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in DATA_FIELDS}


RECIPES: dict[str, TrainConfig] = {
    "shipped": TrainConfig(),
    "peft": TrainConfig(
        first_layer=None,
        max_length=128,
        head_lr=2e-3,
        eval_every=25,
        schedule="constant",
        max_examples=2000,
        holdout=0.0,
    ),  # fmt: skip
}


def recipe_label(cfg: TrainConfig) -> str:
    """A short label of the recipe (metadata ``recipe``), e.g. ``S=3 init=normal preserve=0 schedule=cosine``."""
    depth = "PEFT" if cfg.peft else f"S={cfg.first_layer}"
    return f"{depth} {'projection' if cfg.projection else f'init={cfg.init}'} preserve={cfg.preserve:g} schedule={cfg.schedule}"


@dataclass(frozen=True)
class Recorded:
    """What a prefix file says about how it was trained: enough to train it again."""

    config: TrainConfig
    task: str  # metadata ``task``
    data: str | None  # the built-in data set (metadata ``data.loader``); None: a file (give --data)
    train_digest: str | None  # of the training examples: the data protocol reproduced them if equal
    threads: int | None  # torch threads (other counts change the last digits)


def like(meta: dict[str, Any]) -> Recorded:
    """The configuration recorded in a prefix file's metadata (``training`` and ``data``); a field it
    does not record takes the value of its era's recipe (``peft`` for PEFT files, else ``shipped``).

    Files written before the data protocol was recorded: ``max_examples`` = train + dev examples
    (a subsample to that count is the identity or the same draw), ``dev_fraction`` 0.15, and the
    holdout of their provenance note, or 0.3 when they carry a measured ``source_value``."""
    training = meta.get("training")
    data = meta.get("data")
    if not isinstance(training, dict) or not isinstance(data, dict) or "task" not in meta:
        raise ValueError("the file records no training configuration (metadata training, data, task)")
    if not isinstance(meta["labels"], list) or "n_train" not in data:
        raise ValueError(f"{meta['task']} is a multi-task prefix: give its --data flags and recipe instead")
    known = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in training.items() if k in known}
    values["checkpoint_steps"] = ()  # outputs, not the recipe: they change nothing trained
    values["first_layer"] = int(training["first_layer"]) if training.get("first_layer") is not None else None
    recorded = data.get("protocol")
    recorded = recorded if isinstance(recorded, dict) else {}
    protocol = {
        "max_examples": int(data["n_train"]) + int(data["n_dev"]),
        "dev_fraction": 0.15,
        "holdout": _old_holdout(meta),
    } | {k: v for k, v in recorded.items() if k in DATA_FIELDS}
    era = RECIPES["peft"] if meta.get("position_convention") == "peft" else RECIPES["shipped"]
    cfg = replace(era, **(values | protocol))
    threads = training.get("torch_threads")
    return Recorded(
        cfg,
        str(meta["task"]),
        data.get("loader"),
        data.get("train_digest"),
        int(threads) if threads else None,
    )


def _old_holdout(meta: dict[str, Any]) -> float:
    note = str(meta["data"].get("holdout", ""))
    found = re.search(r"test fraction ([0-9.]+)", note)
    if found:
        return float(found.group(1))
    return EXPERIMENT_HOLDOUT if "source_value" in meta else 0.0
