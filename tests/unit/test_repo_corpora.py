"""Readers of the data sets kept in public repositories (service/method/repo_corpora.py).

BANKING77, CLINC150 (CC BY) and the clickbait headlines (MIT) are read from real slices of their files under tests/data/repos/.
The other sets' licences do not let us copy them here: their real-file tests run on a checkout at the
default location (docs/DATA.md) and are skipped with the reason when it is absent; their parsing is
also checked on files of the same layout written here.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from service.method.community_corpora import load_20newsgroups, load_clickbait, load_politeness
from service.method.corpora import BUILTIN, load_builtin
from service.method.repo_corpora import (
    REPO_BUILTIN,
    load_banking77,
    load_clinc150,
    load_cola,
    load_sent_conv,
    load_tweeteval,
    load_tweeteval_stance,
)
from service.method.repos import REPOS, repo_dir

SLICES = Path(__file__).resolve().parents[1] / "data" / "repos"


def _checkout(key: str) -> Path:
    """The default checkout of REPOS[key], or skip: the licence keeps its files out of tests/data."""
    try:
        return repo_dir(REPOS[key], None)
    except FileNotFoundError as e:
        pytest.skip(f"{e} (its licence does not allow a copy under tests/data)")


def test_banking77_slice_parses_the_real_csv() -> None:
    root = SLICES / REPOS["banking77"].folder
    t = load_banking77(root)
    rows = []
    for part in ("train", "test"):
        with (root / "banking_data" / f"{part}.csv").open(newline="", encoding="utf-8") as fh:
            rows += [(r["text"].strip(), r["category"]) for r in csv.DictReader(fh)]
    expected = dict(reversed(rows))  # the first label of a repeated text wins
    assert dict(zip(t.texts, t.labels, strict=True)) == expected
    assert len(t) == len(expected)
    assert t.name == "banking-intent"
    p = t.provenance
    assert p["repository"] == "PolyAI-LDN/task-specific-datasets"
    assert p["licence"] == "CC BY 4.0"
    assert p["path"] == "banking_data/train.csv, banking_data/test.csv"
    assert len(p["files_sha256"]) == 64


def test_clinc150_slice_leaves_out_of_scope_queries_out() -> None:
    root = SLICES / REPOS["clinc150"].folder
    doc = json.loads((root / "data" / "data_full.json").read_text())
    t = load_clinc150(root)
    in_scope = [(x, y) for part in ("train", "val", "test") for x, y in doc[part]]
    assert sorted(zip(t.texts, t.labels, strict=True)) == sorted(set(in_scope))
    oos = {x for part in ("oos_train", "oos_val", "oos_test") for x, _ in doc[part]}
    assert oos
    assert not oos & set(t.texts)
    assert "oos" not in t.labels


def test_clickbait_slice_parses_the_real_gzip_files() -> None:
    root = SLICES / REPOS["clickbait"].folder
    expected = []
    for label, f in (("clickbait", "clickbait_data.gz"), ("not-clickbait", "non_clickbait_data.gz")):
        lines = gzip.decompress((root / "dataset" / f).read_bytes()).decode().split("\n")
        expected += [(line.strip(), label) for line in lines if line.strip()]
    t = load_clickbait(root)
    assert list(zip(t.texts, t.labels, strict=True)) == expected  # the slice has no repeats
    assert t.counts() == {"clickbait": 128, "not-clickbait": 71}
    assert t.name == "clickbait"
    p = t.provenance
    assert (p["repository"], p["licence"]) == ("bhargaviparanjape/clickbait", "MIT")
    assert p["path"] == "dataset/clickbait_data.gz, dataset/non_clickbait_data.gz"
    assert p["dedup"] == "35 empty or repeated texts dropped"  # 35 blank lines in the slice


def test_clickbait_drops_blank_lines_and_repeats_first_label_wins(tmp_path: Path) -> None:
    (tmp_path / "dataset").mkdir()
    for f, lines in (("clickbait_data.gz", ["You Won't Believe This", "", "You Won't Believe This", "Quiz"]),
                     ("non_clickbait_data.gz", ["Senate passes bill", "", "", "Quiz"])):  # fmt: skip
        (tmp_path / "dataset" / f).write_bytes(gzip.compress("\n".join(lines).encode() + b"\n"))
    t = load_clickbait(tmp_path)
    assert list(zip(t.texts, t.labels, strict=True)) == [
        ("You Won't Believe This", "clickbait"),
        ("Quiz", "clickbait"),
        ("Senate passes bill", "not-clickbait"),
    ]
    assert t.provenance["dedup"] == "5 empty or repeated texts dropped"


def test_the_digest_changes_with_the_bytes(tmp_path: Path) -> None:
    src = SLICES / REPOS["banking77"].folder / "banking_data"
    (tmp_path / "banking_data").mkdir()
    for f in ("train.csv", "test.csv"):
        (tmp_path / "banking_data" / f).write_bytes((src / f).read_bytes())
    same = load_banking77(tmp_path).provenance["files_sha256"]
    assert same == load_banking77(src.parent).provenance["files_sha256"]
    with (tmp_path / "banking_data" / "test.csv").open("a") as fh:
        fh.write("one more query,card_arrival\n")
    assert load_banking77(tmp_path).provenance["files_sha256"] != same


def _write_tweeteval(root: Path, task: str, parts: dict[str, list[tuple[str, int]]]) -> None:
    d = root / "datasets" / task
    d.mkdir(parents=True)
    (d / "mapping.txt").write_text("0\tnot-offensive\n1\toffensive\n")
    for part, rows in parts.items():
        (d / f"{part}_text.txt").write_text("".join(f"{x}\n" for x, _ in rows), encoding="utf-8")
        (d / f"{part}_labels.txt").write_text("".join(f"{y}\n" for _, y in rows))


def test_tweeteval_layout_joins_parts_maps_labels_and_keeps_odd_line_breaks(tmp_path: Path) -> None:
    # U+2028 inside a tweet is not a line end of the file (splitlines() would misalign the labels)
    _write_tweeteval(
        tmp_path,
        "offensive",
        {
            "train": [("@user you are great", 0), ("shut up\u2028idiot", 1)],
            "val": [("@user you are great", 1)],
            "test": [("fine day", 0)],
        },
    )
    t = load_tweeteval("offensive", tmp_path)
    assert list(zip(t.texts, t.labels, strict=True)) == [
        ("@user you are great", "not-offensive"),
        ("shut up\u2028idiot", "offensive"),
        ("fine day", "not-offensive"),
    ]
    assert t.provenance["dedup"] == "1 empty or repeated texts dropped"


def test_tweeteval_refuses_misaligned_files(tmp_path: Path) -> None:
    _write_tweeteval(tmp_path, "offensive", {"train": [("a", 0)], "val": [("b", 1)], "test": [("c", 0)]})
    (tmp_path / "datasets" / "offensive" / "val_labels.txt").write_text("1\n0\n")
    with pytest.raises(ValueError, match="1 texts for 2 labels"):
        load_tweeteval("offensive", tmp_path)


def test_sent_conv_and_cola_layouts(tmp_path: Path) -> None:
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "subj.subjective").write_bytes(b"a small gem . \nna\xefve and warm . \n")
    (raw / "subj.objective").write_bytes(b"the movie begins in the past . \n")
    t = load_sent_conv("subjectivity", tmp_path)
    assert t.counts() == {"objective": 1, "subjective": 2}
    assert "na\u00efve and warm ." in t.texts  # latin-1, as the files are
    cola = tmp_path / "acceptability_corpus" / "cola_public" / "raw"
    cola.mkdir(parents=True)
    (cola / "in_domain_train.tsv").write_text("gj04\t1\t\tThe book was written.\nc-05\t0\t*\tBooks was.\n")
    (cola / "in_domain_dev.tsv").write_text("swb04\t1\t\tShe voted for herself.\n")
    (cola / "out_of_domain_dev.tsv").write_text("bad line\n")
    c = load_cola(tmp_path)
    assert list(zip(c.texts, c.labels, strict=True)) == [
        ("The book was written.", "acceptable"),
        ("Books was.", "unacceptable"),
        ("She voted for herself.", "acceptable"),
    ]


def test_missing_checkout_names_the_repository_and_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("service.method.repos.REPO_CACHE", tmp_path)
    with pytest.raises(FileNotFoundError, match=f"cardiffnlp/tweeteval .*{REPOS['tweeteval'].commit}"):
        load_tweeteval("emotion")


def test_every_repo_set_is_a_builtin() -> None:
    assert set(REPO_BUILTIN) <= set(BUILTIN)


# real files of the sets that are not copied here: sizes and labels as docs/DATA.md records them
REAL = {
    "tweeteval-emotion": ("tweeteval", 5027, {"anger": 2118, "joy": 1138, "optimism": 445, "sadness": 1326}),
    "tweeteval-irony": ("tweeteval", 4601, {"irony": 2212, "non_irony": 2389}),
    "tweeteval-offensive": ("tweeteval", 14047, {"not-offensive": 9417, "offensive": 4630}),
    "tweeteval-hate": ("tweeteval", 12717, {"hate": 5323, "not-hate": 7394}),
    "tweeteval-emoji": ("tweeteval", 99268, None),
    "subjectivity": ("sent-conv-torch", 10000, {"objective": 5000, "subjective": 5000}),
    "opinion-polarity": ("sent-conv-torch", 8240, {"negative": 5809, "positive": 2431}),
    "review-polarity": ("sent-conv-torch", 3765, {"negative": 1365, "positive": 2400}),
    "cola": ("cola", 9553, {"acceptable": 6716, "unacceptable": 2837}),
    "ag-news": ("ag-news", 7600, {"Business": 1900, "Sci/Tech": 1900, "Sports": 1900, "World": 1900}),
    "banking77": ("banking77", 13072, None),
    "clinc150": ("clinc150", 22495, None),
    "20-newsgroups": ("20-newsgroups", 19235, None),
    "politeness": ("politeness", 5465, {"impolite": 2732, "polite": 2733}),
    "tweeteval-stance": ("tweeteval", 4151, {"against": 2102, "favor": 1054, "none": 995}),
    "clickbait": ("clickbait", 32000, {"clickbait": 15999, "not-clickbait": 16001}),
}
LABEL_COUNTS = {"banking77": 77, "clinc150": 150, "tweeteval-emoji": 20, "20-newsgroups": 20}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_checkout_has_the_documented_size(name: str) -> None:
    key, size, counts = REAL[name]
    _checkout(key)
    t = load_builtin(name)
    assert len(t) == size
    if counts is not None:
        assert t.counts() == counts
    else:  # the intent sets (77 and 150 intents), the 20 emoji and the 20 newsgroups
        assert len(t.label_names) == LABEL_COUNTS[name]
        assert min(Counter(t.labels).values()) >= 30
    assert t.provenance["commit"] == REPOS[key].commit


def test_tweeteval_emoji_mapping_names_the_emoji(tmp_path: Path) -> None:
    _write_tweeteval(tmp_path, "emoji", {"train": [("lit", 1)], "val": [("love u", 0)], "test": []})
    (tmp_path / "datasets" / "emoji" / "mapping.txt").write_text(
        "0\t\u2764\t_red_heart_\t\n1\t\U0001f525\t_fire_\t\n"
    )
    t = load_tweeteval("emoji", tmp_path)
    assert list(zip(t.texts, t.labels, strict=True)) == [("lit", "fire"), ("love u", "red_heart")]


# the digests docs/DATA.md records for the sets added in session 4 (files read; loaded examples)
DIGESTS = {
    "clickbait": ("dc06ac4577fb02523fd368e18a2e254b2ce951a9299720bb9b7e0b2fc77ea364", "1aeecd9ac4d575de"),
    "20-newsgroups": ("be7debab433f901829b6484cbc567b132b308acf01422d64d60a797570d3c87e", "d148b43647b7c1cb"),
    "politeness": ("70d5f663b8bac51d944916c0ec644f3f1d634b63d6ce07c85006fc2ebde64d54", "33ff8411bd42f291"),
    "tweeteval-stance": (
        "0fca863ab2ec4de006abbfd4136da182d2bb522ea42a374d4fadb7b07b959c6f",
        "a99af56bd532f3c7",
    ),
}


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_real_checkout_has_the_documented_digests(name: str) -> None:
    _checkout(REAL[name][0])
    t = load_builtin(name)
    assert (t.provenance["files_sha256"], t.digest()) == DIGESTS[name]


def test_real_newsgroup_posts_do_not_name_their_group_in_a_header() -> None:
    _checkout("20-newsgroups")
    t = load_builtin("20-newsgroups")
    assert not any(x.startswith(("Newsgroups:", "From:", "Subject:")) for x in t.texts)
    assert min(t.counts().values()) > 600  # talk.religion.misc loses most to quotes and cross-posts


POST = """Newsgroups: sci.space
From: someone@example.edu (Some One)
Subject: Big rockets

In article <1@x.edu> other@y.edu writes:
> Rockets are loud.
|> very loud
BR> Newsgroups: sci.space
	From: quoted@x.edu
I agree, and they are
expensive.
Newsgroups: rec.autos
--
Some One, example.edu
"""


def test_newsgroup_layout_keeps_the_posts_own_words(tmp_path: Path) -> None:
    for group, posts in {
        "sci.space": {"60804": POST, "9": "H: x\n\nshort"},
        "rec.autos": {"1": POST},
    }.items():
        d = tmp_path / "data" / group
        d.mkdir(parents=True)
        for name, text in posts.items():
            (d / name).write_bytes(text.encode("latin-1"))
    t = load_20newsgroups(tmp_path)
    # group folders in name order, posts in number order; the cross-post keeps the first group
    assert list(zip(t.texts, t.labels, strict=True)) == [
        ("I agree, and they are expensive.", "rec.autos"),
        ("short", "sci.space"),
    ]
    assert t.provenance["dedup"] == "1 empty or repeated texts dropped"
    assert t.provenance["path"] == "data/rec.autos/1, data/sci.space/9, data/sci.space/60804"


def test_politeness_keeps_each_communitys_top_and_bottom_quarter(tmp_path: Path) -> None:
    d = tmp_path / "corpora"
    d.mkdir()
    header = ["Community", "Id", "Request", "Normalized Score"]
    for f, scores in {"wikipedia.annotated.csv": [0.5, -2.0, 1.5, 0.0, -0.1, 0.2, 0.1, 2.0],
                      "stack-exchange.annotated.csv": [0.3, -0.3, 0.0, 0.1]}.items():  # fmt: skip
        with (d / f).open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(["c", i, f"{f[:4]} request {s}", s] for i, s in enumerate(scores))
    t = load_politeness(tmp_path)
    assert list(zip(t.texts, t.labels, strict=True)) == [
        ("wiki request -2.0", "impolite"),
        ("wiki request -0.1", "impolite"),
        ("wiki request 1.5", "polite"),
        ("wiki request 2.0", "polite"),
        ("stac request -0.3", "impolite"),
        ("stac request 0.3", "polite"),
    ]


def test_stance_layout_joins_every_target_and_part(tmp_path: Path) -> None:
    root = tmp_path / "datasets" / "stance"
    root.mkdir(parents=True)
    (root / "mapping.txt").write_text("0\tnone\n1\tagainst\n2\tfavor")  # no final newline, as in the copy
    for i, target in enumerate(("abortion", "atheism", "climate", "feminist", "hillary")):
        d = root / target
        d.mkdir()
        for part in ("train", "val", "test"):
            (d / f"{part}_text.txt").write_text(f"{target} {part} #SemST\n")
            (d / f"{part}_labels.txt").write_text(f"{i % 3}\n")
    t = load_tweeteval_stance(tmp_path)
    assert (t.name, len(t)) == ("tweet-stance", 15)
    assert t.texts[:4] == [
        "abortion train #SemST",
        "abortion val #SemST",
        "abortion test #SemST",
        "atheism train #SemST",
    ]
    assert t.counts() == {"none": 6, "against": 6, "favor": 3}
    (root / "hillary" / "val_labels.txt").write_text("0\n1\n")
    with pytest.raises(ValueError, match="hillary/val: 1 texts for 2 labels"):
        load_tweeteval_stance(tmp_path)
