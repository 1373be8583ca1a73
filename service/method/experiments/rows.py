"""The experiments' tasks, rows (recipes) and data: source tasks, targets, the shared trunk caches."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from service.backbones.catalog import DEFAULT_BACKBONE, KNOWN, default_backbones_dir, resolve_model
from service.engine.backbone import Backbone, load_backbone
from service.method.corpora import load_builtin
from service.method.data import TaskData, protocol_splits
from service.method.recipe import TrainConfig
from service.method.trunk import TrunkCache, build_trunk_cache

OUT = Path("results/trunk")
PREFIX_OUT = Path("results/prefixes/trunk")
VEC = Path(".cache/trunk")
CS = (0.001, 0.01, 0.1)  # the probes' C grid (stratified 3-fold CV)

# source task -> (built-in data set, max tokens)
SOURCES = {
    "question-type": ("trec", 48),
    "sms-spam": ("sms-spam", 64),
    "sentiment": ("vader-reviews", 64),
    "news-topic": ("bbc-news", 128),
    "editorial-sentiment": ("vader-nyt", 64),
    # issue 24: sets kept in public repositories (service/method/repo_corpora.py, docs/DATA.md)
    "tweet-emotion": ("tweeteval-emotion", 64),
    "tweet-irony": ("tweeteval-irony", 64),
    "tweet-offensive": ("tweeteval-offensive", 64),
    "tweet-hate": ("tweeteval-hate", 64),
    "tweet-emoji": ("tweeteval-emoji", 64),
    "subjectivity": ("subjectivity", 64),
    "review-polarity": ("review-polarity", 64),
    "opinion-polarity": ("opinion-polarity", 32),
    "banking-intent": ("banking77", 48),
    "assistant-intent": ("clinc150", 48),
    "acceptability": ("cola", 48),
    "ag-news-topic": ("ag-news", 64),
    "newsgroup-topic": ("20-newsgroups", 128),  # session 4: a finer topic set (20 groups)
    "politeness": ("politeness", 64),  # session 4: a second "not content" set (register)
    "tweet-stance": ("tweeteval-stance", 64),  # session 4: stance on five targets
    "clickbait": ("clickbait", 64),  # session 4: headline style (a third "not content" set)
    "stackoverflow-topic": ("stackoverflow", 48),  # session 5: short titles, 20 tags (topic family)
}
N_TARGET = (1500, 750)  # probe-training / test texts per target
TVEC = VEC / f"targets{N_TARGET[0]}x{N_TARGET[1]}"  # the targets' vectors (base and per prefix)
TARGETS = {
    "text-genre": ("brown-genre", 64),
    "tweet-sentiment": ("crowdflower-tweets", 64),
    "email-spam": ("spam-assassin", 64),
}

# The depth table's recipe: S = 4, 2,000 examples, 75 steps, a dev check every 25, constant lr.
BASE = TrainConfig(first_layer=4, max_steps=75, eval_every=25, schedule="constant", max_examples=2000)
# row -> (config changes, transfer measured?)
ROWS: dict[str, tuple[dict[str, object], bool]] = {
    **{f"depth{s}": ({"first_layer": s}, s == 4) for s in (0, 3, 4, 5, 6, 8, 9, 10)},  # 6-10: mpnet
    "tokens": ({"init": "tokens"}, True),
    "projection": ({"projection": True}, False),
    "preserve0.1": ({"preserve": 0.1}, True),
    "preserve1": ({"preserve": 1.0}, True),
    "cosine": ({"schedule": "cosine"}, False),
    "fulldata": ({"max_steps": 400, "max_examples": 8000}, False),
    # S = 3 (the depth table's choice): projection on the depth3 data/steps; then the full training
    # part of each data set (pool <= 8,000), 300 steps, dev every 50, constant or cosine lr
    "s3proj": ({"first_layer": 3, "projection": True}, False),
    "s3full": ({"first_layer": 3, "max_steps": 300, "eval_every": 50, "max_examples": 8000}, True),
    "s3full-cos": (
        {"first_layer": 3, "max_steps": 300, "eval_every": 50, "max_examples": 8000, "schedule": "cosine"},
        True,
    ),
    # the shipped recipe at other depths: S = 0 (every layer; issue 24's topic attempt, compared
    # with s3full-cos on the same dev split), and 12-layer backbones' (mpnet) depth-table choices
    **{
        f"s{s}full-cos": (
            {
                "first_layer": s,
                "max_steps": 300,
                "eval_every": 50,
                "max_examples": 8000,
                "schedule": "cosine",
            },
            True,
        )
        for s in (0, 6, 8, 9, 10)
    },
}
LEGACY_DEPTHS = (0, 3, 4, 5)  # the trunk depths cached for the 2,000-example pool (the depth table)
# The depth table of each other backbone (issue 26: S in {6, 8, 9, 10} of mpnet's 12 layers).
DEPTH_TABLES = {"all-mpnet-base-v2": (6, 8, 9, 10)}


@dataclass(frozen=True)
class Study:
    """One backbone's experiments: where they read and write, the depth table's depths, and the
    folder ``ship`` copies prefixes into. The default backbone uses the paths above; another known
    backbone NAME the same paths with NAME appended, and ships into its own prefix folder."""

    model: str
    out: Path
    prefix_out: Path
    vec: Path
    ship_dir: Path
    depths: tuple[int, ...]

    @property
    def tvec(self) -> Path:
        """The targets' vectors (base and per prefix)."""
        return self.vec / TVEC.name

    def load(self) -> Backbone:
        path = resolve_model(Path(self.model), default_backbones_dir())
        return load_backbone(path, device="cpu", dtype="float32")


def study(model: str | None = None) -> Study:
    """The study of a known backbone (None: the default)."""
    name = model or DEFAULT_BACKBONE
    if name not in KNOWN:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(KNOWN)}")
    if name == DEFAULT_BACKBONE:
        return Study(name, OUT, PREFIX_OUT, VEC, Path("prefixes"), LEGACY_DEPTHS)
    return Study(name, OUT / name, PREFIX_OUT / name, VEC / name, KNOWN[name].prefix_dir, DEPTH_TABLES[name])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cfg_for(row: str, seed: int, task: str) -> TrainConfig:
    """The row's configuration (the shipped prefixes are row ``s3full-cos``, seed 0)."""
    changes, _ = ROWS[row]
    return replace(BASE, seed=seed, max_length=SOURCES[task][1], **changes)  # type: ignore[arg-type]


def source_splits(task: str, cfg: TrainConfig) -> tuple[TaskData, TaskData, TaskData]:
    """(train, dev, test) of a source task under ``cfg``'s data protocol (the 30 % holdout first)."""
    data = replace(load_builtin(SOURCES[task][0]), name=task)
    train, dev, test = protocol_splits(
        data, holdout_fraction=cfg.holdout, max_examples=cfg.max_examples, dev_fraction=cfg.dev_fraction,
        seed=cfg.seed,
    )  # fmt: skip
    assert test is not None  # the rows all hold out a test split
    return train, dev, test


def _holder_gone(lock: Path) -> bool:
    """Whether the process whose pid ``lock`` holds has exited (a stopped run left the lock behind)."""
    try:
        pid = int(lock.read_text().strip() or "0")
    except (OSError, ValueError):
        return False  # an older empty lock, or one being written: keep waiting
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def built_once(file: Path, build: Callable[[], Any], wait_s: float = 3600) -> Any:
    """``build()``, saved to ``file`` by the first process that claims it (a lock file beside it,
    holding its pid); the others wait for the file, and take the claim over when its holder has
    exited without writing it. Every caller gets what the file holds."""
    lock = file.with_suffix(".lock")
    file.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + wait_s
    while not file.is_file():
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _holder_gone(lock):
                lock.unlink(missing_ok=True)
                continue
            if time.time() > deadline:
                raise TimeoutError(f"{file} did not appear") from None
            time.sleep(10)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        if not file.is_file():
            tmp = file.with_suffix(f".{os.getpid()}.tmp")
            torch.save(build(), tmp)
            tmp.rename(file)
    return torch.load(file)


def shared_cache(
    backbone: Backbone, task: str, cfg: TrainConfig, depths: tuple[int, ...], vec: Path = VEC
) -> tuple[tuple[TaskData, TaskData, TaskData], dict[str, TrunkCache]]:
    """The task's splits and their trunk caches at ``depths`` (by data digest, as
    :func:`~service.method.train.train_prefix` takes them), built once and kept on disk so that
    several processes of one task share them."""
    splits = source_splits(task, cfg)
    tag = "" if depths == LEGACY_DEPTHS else ".S" + "-".join(map(str, depths))

    def build() -> list[tuple[dict[int, list[torch.Tensor]], torch.Tensor]]:
        t0 = time.perf_counter()
        built = [build_trunk_cache(backbone, d.texts, d.pairs, depths, cfg.max_length) for d in splits]
        sizes = "+".join(str(len(d)) for d in splits)
        log(f"{task}: trunk cache of {sizes} texts in {time.perf_counter() - t0:.0f}s")
        return [(c.states, c.base) for c in built]

    loaded = built_once(vec / "states" / f"{task}.pool{cfg.max_examples}.seed{cfg.seed}{tag}.pt", build)
    return splits, {d.digest(): TrunkCache(st, b) for d, (st, b) in zip(splits, loaded, strict=True)}
