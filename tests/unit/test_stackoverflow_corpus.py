"""The Stack Overflow question-title reader (service/method/community_corpora.py) on a real slice of
its files (CC BY-SA, tests/data/repos/jacoxu+STC2/NOTICE), on files of the same layout written here,
and on a full checkout where one is present (its size and digests as docs/DATA.md records them)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from service.method.community_corpora import STACKOVERFLOW_TAGS, load_stackoverflow
from service.method.corpora import load_builtin
from service.method.repos import REPOS, repo_dir

SLICE = Path(__file__).resolve().parents[1] / "data" / "repos" / REPOS["stackoverflow"].folder


def test_slice_parses_the_real_files_line_by_line() -> None:
    titles = (SLICE / "dataset" / "StackOverflow.txt").read_text().split("\n")[:-1]
    ids = (SLICE / "dataset" / "StackOverflow_gnd.txt").read_text().split("\n")[:-1]
    t = load_stackoverflow(SLICE)
    assert list(zip(t.texts, t.labels, strict=True)) == [
        (x.strip(), STACKOVERFLOW_TAGS[int(i) - 1]) for x, i in zip(titles, ids, strict=True)
    ]  # the slice has no repeats
    assert len(t) == 80
    assert t.name == "stackoverflow-topic"
    # the first line of the file, and the tags its ids name (checked by reading titles of each id)
    assert (t.texts[0], t.labels[0]) == (
        "How do I fill a DataSet or a DataTable from a LINQ query resultset ?",
        "linq",
    )
    assert Counter(t.labels)["svn"] == 8
    p = t.provenance
    assert p["repository"] == "jacoxu/STC2"
    assert p["licence"].startswith("CC BY-SA")
    assert p["path"] == "dataset/StackOverflow.txt, dataset/StackOverflow_gnd.txt"


def test_repeats_keep_the_first_tag_and_misaligned_files_fail(tmp_path: Path) -> None:
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "StackOverflow.txt").write_text("Qt signals\nvim in bash\nQt signals\n")
    (tmp_path / "dataset" / "StackOverflow_gnd.txt").write_text("16\n10\n1\n")
    t = load_stackoverflow(tmp_path)
    assert list(zip(t.texts, t.labels, strict=True)) == [("Qt signals", "qt"), ("vim in bash", "bash")]
    assert t.provenance["dedup"] == "1 empty or repeated texts dropped"
    (tmp_path / "dataset" / "StackOverflow_gnd.txt").write_text("16\n10\n")
    with pytest.raises(ValueError, match="3 titles for 2 labels"):
        load_stackoverflow(tmp_path)


def test_real_checkout_has_the_documented_size_and_digests() -> None:
    try:
        repo_dir(REPOS["stackoverflow"], None)
    except FileNotFoundError as e:
        pytest.skip(f"{e} (the test's slice is under tests/data; the full set is not copied)")
    t = load_builtin("stackoverflow")
    assert len(t) == 19985  # 20,000 lines, 15 repeated titles dropped
    assert set(t.labels) == set(STACKOVERFLOW_TAGS)
    assert min(t.counts().values()) == 996  # spring loses 4 repeats; 1,000 a tag before
    assert (t.provenance["files_sha256"], t.digest()) == (
        "18463eef572cbc0e6f2eed79ed11be8c349790a83ec9c8ba2d8fc9098c4cf6d8",
        "85c4dd4fd2e3507f",
    )
    assert t.provenance["commit"] == REPOS["stackoverflow"].commit
