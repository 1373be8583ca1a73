"""The documentation points into the repository: every relative Markdown link of the README,
prefixes/README.md and docs/*.md names a file that is there, and the data documentation that `train
--data` and the README point to is docs/DATA.md (issue 22 item 6: it once pointed outside)."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from service.cli import app
from tests.support.doc_examples import doc_files

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_relative_link_names_a_file_in_the_repository() -> None:
    broken = [
        (path.relative_to(REPO).as_posix(), target)
        for path in doc_files(REPO)
        for target in LINK.findall(path.read_text())
        if not re.match(r"[a-z]+:|#", target) and not (path.parent / target.split("#")[0]).exists()
    ]
    assert not broken, broken


def test_the_data_documentation_is_in_the_repository_and_train_points_to_it() -> None:
    assert (REPO / "docs" / "DATA.md").is_file()
    readme = (REPO / "README.md").read_text()
    assert "[docs/DATA.md](docs/DATA.md)" in readme
    assert "shared/DATA.md" not in readme
    help_text = CliRunner().invoke(app, ["train", "--help"], terminal_width=400).output
    assert "docs/DATA.md" in " ".join(help_text.split())
