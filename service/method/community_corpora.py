"""Loaders for text from online communities and media kept in public repositories (issue 24, sessions 4
and 5; docs/DATA.md): 20 Newsgroups (Usenet posts, 20 groups), the Stanford Politeness Corpus (requests
on Wikipedia talk pages and Stack Exchange, rated for politeness), clickbait headlines (Chakraborty
et al. 2016: viral-media against news-site headlines) and Stack Overflow question titles (20 tags).

Each reads a checkout at the commit pinned in :data:`service.method.repos.REPOS`; the returned task
records what was read (:class:`~service.method.repos.RepoReader`).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from service.method.data import TaskData
from service.method.repos import REPOS, RepoReader, repo_task

# a line that quotes another post (">", "|", or initials as in "BR>"), introduces a quote ("In article
# <...> x@y writes:") or is a header of a quoted or forwarded post (its Newsgroups line names a label)
_QUOTED = re.compile(
    r"^\s*\w{0,4}\s?[>|]|^In article|^Quoted from|writes in|writes:|wrote:|says:|said:"
    r"|^\s*(Newsgroups|Path|From|Subject|Date|Organization|Lines|Message-ID|Sender|References|Xref"
    r"|NNTP-Posting-Host|Followup-To|Reply-To|In-Reply-To|Distribution|Keywords|Summary|X-[\w-]+):",
    re.IGNORECASE,
)


def newsgroup_body(post: str) -> str:
    """A post's own words on one line: the headers (up to the first blank line: the Newsgroups line
    names the label), quoted lines and the signature (after the last line of dashes only) dropped."""
    _headers, _, body = post.partition("\n\n")
    lines = [line for line in body.split("\n") if not _QUOTED.search(line)]
    cut = [i for i, line in enumerate(lines) if len(line.strip()) >= 2 and not line.strip().strip("-")]
    return " ".join(" ".join(lines[: cut[-1]] if cut else lines).split())


def load_20newsgroups(path: Path | None = None) -> TaskData:
    """20 Newsgroups (the original 19,997 posts, 1,000 per group less 3): a post's body -> its group."""
    r = RepoReader(REPOS["20-newsgroups"], path)
    texts, labels = [], []
    for group in sorted(d.name for d in (r.root / "data").iterdir() if d.is_dir()):
        for post in sorted((r.root / "data" / group).iterdir(), key=lambda f: (len(f.name), f.name)):
            texts.append(newsgroup_body(r.text(f"data/{group}/{post.name}", encoding="latin-1")))
            labels.append(group)
    return repo_task(
        "newsgroup-topic",
        texts,
        labels,
        r,
        "newsgroup of a Usenet post (20 Newsgroups, 20 groups; headers, quotes and signature removed)",
        filter="body only: headers, quoted lines and signature removed (the scikit-learn convention)",
    )


POLITENESS_FILES = ("wikipedia.annotated.csv", "stack-exchange.annotated.csv")


def load_politeness(path: Path | None = None) -> TaskData:
    """Politeness of a request (Wikipedia talk pages and Stack Exchange): as in the paper, the top
    quarter of each community's requests by mean annotator score is polite, the bottom quarter impolite
    (the middle half is left out)."""
    r = RepoReader(REPOS["politeness"], path)
    texts, labels = [], []
    for f in POLITENESS_FILES:
        rows = list(csv.DictReader(io.StringIO(r.text(f"corpora/{f}"))))
        rows.sort(key=lambda row: float(row["Normalized Score"]))  # stable: file order breaks ties
        quarter = len(rows) // 4
        for label, part in (("impolite", rows[:quarter]), ("polite", rows[len(rows) - quarter :])):
            texts += [row["Request"] for row in part]
            labels += [label] * len(part)
    return repo_task(
        "politeness",
        texts,
        labels,
        r,
        "politeness of a request (Stanford Politeness Corpus): polite / impolite (top / bottom quarter)",
        filter="per community: top and bottom quarter by normalized score; the middle half left out",
    )


CLICKBAIT_FILES = {"clickbait": "clickbait_data.gz", "not-clickbait": "non_clickbait_data.gz"}


def load_clickbait(path: Path | None = None) -> TaskData:
    """Clickbait headlines (BuzzFeed, Upworthy, ViralNova, ...) against news headlines (WikiNews, NYT,
    The Guardian, The Hindu): 16,000 a file, one headline a line (gzip); blank lines and repeats
    dropped. A style / register set: both sides are headlines about any topic."""
    r = RepoReader(REPOS["clickbait"], path)
    texts, labels = [], []
    for label, f in CLICKBAIT_FILES.items():
        for line in r.lines(f"dataset/{f}"):
            texts.append(line)
            labels.append(label)
    return repo_task(
        "clickbait",
        texts,
        labels,
        r,
        "clickbait headline (Chakraborty et al. 2016): clickbait / not-clickbait (news sites)",
    )


# StackOverflow_gnd.txt's label ids 1-20 in the order of Xu et al.'s tag list (checked on the file:
# each id's titles name its tag, e.g. id 1 "... tag in Wordpress?", id 20 "Magento: ...")
STACKOVERFLOW_TAGS = (
    "wordpress", "oracle", "svn", "apache", "excel", "matlab", "visual-studio", "cocoa", "osx", "bash",
    "spring", "hibernate", "scala", "sharepoint", "ajax", "qt", "drupal", "linq", "haskell", "magento",
)  # fmt: skip


def load_stackoverflow(path: Path | None = None) -> TaskData:
    """Stack Overflow question titles -> their tag (20 tags, 1,000 titles each; Xu et al.'s short-text
    set): ``StackOverflow.txt`` one title a line, ``StackOverflow_gnd.txt`` its label id on the same
    line; repeated titles dropped (the first label wins)."""
    r = RepoReader(REPOS["stackoverflow"], path)
    texts = r.lines("dataset/StackOverflow.txt")
    ids = r.lines("dataset/StackOverflow_gnd.txt")
    if len(texts) != len(ids):
        raise ValueError(f"StackOverflow: {len(texts)} titles for {len(ids)} labels")
    labels = [STACKOVERFLOW_TAGS[int(i) - 1] for i in ids]
    return repo_task(
        "stackoverflow-topic",
        texts,
        labels,
        r,
        "topic of a Stack Overflow question title: its tag, 20 tags (Xu et al. 2015 short-text set)",
    )
