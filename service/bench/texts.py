"""Deterministic benchmark texts of mixed length (no data download needed)."""

from __future__ import annotations

import random

_WORDS = ["the", "service", "keeps", "one", "frozen", "encoder", "and", "many", "small", "task", "prefixes", "so", "that", "every", "text", "is", "encoded", "once", "under", "all", "prefixes", "in", "a", "single", "batched", "forward", "call", "while", "downstream", "models", "train", "light", "classifiers", "on", "fixed", "vectors", "for", "sentiment", "topic", "intent", "spam", "and", "many", "other", "tasks", "news", "markets", "weather", "sport", "politics", "music", "film", "science", "health", "travel", "food", "money"]


def sample_texts(n: int, *, min_words: int = 4, max_words: int = 40, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(_WORDS, k=rng.randint(min_words, max_words))) for _ in range(n)]
