"""The documentation's examples are read from the Markdown, and each one is either run by the
newcomer run (tests/e2e/test_newcomer.py) or listed as unrunnable with its reason: an unknown example,
or a list entry no example matches, fails here (without a server) before it fails there."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from tests.support.doc_examples import Example, examples, examples_in, fenced_blocks, shell_commands
from tests.support.example_plan import GIVEN_FILES, UNRUNNABLE, Unrunnable, kind_of, plan, problems
from tests.support.fake_encoder import FAKE_SPEC
from tests.support.heads import check_predictions, predict_embed_body, write_random_head

REPO = Path(__file__).resolve().parents[2]

DOC = """\
Text with `inline code` that is not an example.

```bash
# a comment line
curl -s localhost:8080/embed -H 'content-type: application/json' \\
  -d '{"inputs": "a"}'   # a trailing comment
curl -s localhost:8080/embed -d '{"inputs": "the movie",
       "prefixes": null}'

python -m service models show --prefix-dir prefixes
```

```json
{"not": "an example"}
```

  ```python
  print(1)
  ```
"""


def test_fenced_blocks_with_their_language_and_line() -> None:
    blocks = fenced_blocks(DOC)
    assert [(line, lang) for line, lang, _ in blocks] == [(4, "bash"), (14, "json"), (18, "python")]
    assert blocks[2][2] == "print(1)"  # the fence's indent is taken off


def test_shell_commands_join_continuations_and_open_quotes(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(DOC)
    found = examples_in(tmp_path / "README.md", tmp_path)
    assert [(e.where, e.lang) for e in found] == [
        ("README.md:5", "shell"),
        ("README.md:7", "shell"),
        ("README.md:10", "shell"),
        ("README.md:18", "python"),
    ]
    assert found[0].one_line == (
        "curl -s localhost:8080/embed -H 'content-type: application/json' -d '{\"inputs\": \"a\"}'"
    )
    assert found[0].words[-1] == '{"inputs": "a"}'  # the trailing comment is not a word
    assert found[1].words[-1] == '{"inputs": "the movie",\n       "prefixes": null}'
    assert [kind_of(e) for e in found] == ["curl", "curl", "service", "python"]


def test_an_unfinished_command_is_an_error() -> None:
    with pytest.raises(ValueError, match="unfinished"):
        shell_commands('curl -d \'{"open": 1}')


def test_unknown_examples_and_stale_entries_are_problems() -> None:
    docker = Example("X.md:1", "shell", "docker run --rm prefix-embed:cpu")
    curl = Example("X.md:2", "shell", "curl -s localhost:8080/health")
    listed = [Unrunnable(r"docker run .*", "no daemon"), Unrunnable(r"kubectl .*", "no cluster")]
    found = plan([docker, curl], listed)
    assert [e.where for e, _ in found.run] == ["X.md:2"]
    assert [e.where for e, _ in found.skipped] == ["X.md:1"]
    assert found.stale == [listed[1]]
    assert len(problems(found)) == 1
    unlisted = plan([docker, curl], [])
    assert unlisted.unknown == [docker]
    assert "X.md:1" in problems(unlisted)[0]
    # a curl of another host, a tool this test cannot run: unknown too
    assert kind_of(Example("X.md:3", "shell", "curl -s https://example.com")) is None
    assert kind_of(Example("X.md:4", "shell", "RAY_ADDRESS=auto python -m service ray-serve")) == "service"


def test_every_documented_example_is_run_or_listed_with_a_reason() -> None:
    found = plan(examples(REPO))
    assert not problems(found), "\n".join(problems(found))
    assert all(u.reason for u in UNRUNNABLE)
    kinds = {kind for _, kind in found.run}
    assert {"curl", "service", "python"} <= kinds, kinds  # the README's own kinds are all found
    for name, source in GIVEN_FILES.items():  # what an example treats as the reader's own file
        assert (REPO / source).is_file(), (name, source)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_the_predict_check_holds_scores_to_the_head_file(tmp_path: Path, activation: str) -> None:
    """``check_predictions`` (the /predict examples' check) accepts what the service's head computes
    and refuses a score that is off by 1e-3 or a label that is not the best one."""
    labels = ["a", "b"] if activation == "sigmoid" else ["a", "b", "c"]
    head = write_random_head(tmp_path, "h", FAKE_SPEC, ["base"], labels, activation=activation, seed=3)
    texts = ["one", "two", "three"]
    vectors = np.random.default_rng(0).normal(size=(3, 1, FAKE_SPEC.hidden_size)).astype(np.float32)
    probs = head.probabilities(vectors)
    embed = {
        "prefixes": [{"name": "base", "digest": head.inputs[0].digest}],
        "data": [{"index": i, "embeddings": {"base": v[0].tolist()}} for i, v in enumerate(vectors)],
    }
    document = {
        "heads": [{"name": "h", "digest": head.digest, "labels": labels, "inputs": [{"name": "base", "digest": head.inputs[0].digest}]}],
        "prefixes": embed["prefixes"],
        "data": [
            {"index": i, "predictions": {"h": {"label": labels[int(p.argmax())], "score": float(p.max()), "scores": dict(zip(labels, p.tolist(), strict=True))}}}
            for i, p in enumerate(probs)
        ],
    }  # fmt: skip
    assert predict_embed_body(document, texts) == {"inputs": texts, "prefixes": ["base"], "normalize": False}
    check_predictions(document, texts, tmp_path / "heads", embed)
    off = copy.deepcopy(document)
    off["data"][1]["predictions"]["h"]["scores"]["a"] += 1e-3
    with pytest.raises(AssertionError):
        check_predictions(off, texts, tmp_path / "heads", embed)
    wrong = copy.deepcopy(document)
    wrong["data"][0]["predictions"]["h"]["label"] = next(
        x for x in labels if x != document["data"][0]["predictions"]["h"]["label"]
    )
    with pytest.raises(AssertionError):
        check_predictions(wrong, texts, tmp_path / "heads", embed)
