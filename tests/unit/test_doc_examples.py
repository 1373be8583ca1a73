"""The documentation's examples are read from the Markdown, and each one is either run by the
newcomer run (tests/e2e/test_newcomer.py) or listed as unrunnable with its reason: an unknown example,
or a list entry no example matches, fails here (without a server) before it fails there."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.doc_examples import Example, examples, examples_in, fenced_blocks, shell_commands
from tests.support.example_plan import GIVEN_FILES, UNRUNNABLE, Unrunnable, kind_of, plan, problems

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
