"""One source for the speed of onnx against torch: BENCHMARKS.md. The start-up log (the backend's
reason) and the README cite its sections instead of repeating numbers, and every section the
documentation cites exists (a renamed section fails here, not in a reader's search)."""

from __future__ import annotations

import re
from pathlib import Path

from service.backend import ONNX_SPEED_SOURCE, choose_backend
from tests.support.doc_examples import doc_files

REPO = Path(__file__).resolve().parents[2]
# "1.5x torch", "1.10x torch", "torch ... 1.6x": a speed ratio of onnx against torch
RATIO = re.compile(
    r"\d+(\.\d+)?x (torch|ORT|onnx)|(torch|ORT|onnx)[^.;]{0,40}\b\d+(\.\d+)?x\b", re.IGNORECASE
)
# BENCHMARKS.md, "A" / BENCHMARKS.md ("A", "B") / [BENCHMARKS.md](BENCHMARKS.md) ("A")
CITATION = re.compile(r'BENCHMARKS\.md\)?,? ?\(?((?:"[^"]+"(?:,? (?:and )?)?)+)')


def headings() -> list[str]:
    lines = (REPO / "BENCHMARKS.md").read_text().splitlines()
    return [line.lstrip("#").strip().lower() for line in lines if line.startswith("#")]


def cited(text: str) -> list[str]:
    flat = " ".join(text.split())
    return [name for m in CITATION.finditer(flat) for name in re.findall(r'"([^"]+)"', m.group(1))]


def onnx_section() -> str:
    readme = (REPO / "README.md").read_text()
    return readme.split("\n## ONNX backend\n", 1)[1].split("\n## ", 1)[0]


def test_the_start_up_reason_cites_benchmarks_and_repeats_no_ratio() -> None:
    reason = choose_backend("auto", "cpu", "float32", ort_installed=True).reason
    assert ONNX_SPEED_SOURCE in reason
    assert not RATIO.search(reason), reason
    assert cited(ONNX_SPEED_SOURCE), ONNX_SPEED_SOURCE


def test_the_readme_onnx_section_cites_the_same_source_and_repeats_no_ratio() -> None:
    section = onnx_section()
    assert [m.group(0) for m in RATIO.finditer(" ".join(section.split()))] == []
    assert set(cited(ONNX_SPEED_SOURCE)) <= set(cited(section))


def test_every_benchmarks_section_the_docs_cite_exists() -> None:
    known = headings()
    sources = {path.name: path.read_text() for path in doc_files(REPO)} | {"backend": ONNX_SPEED_SOURCE}
    missing = [
        (where, name)
        for where, text in sources.items()
        for name in cited(text)
        if not any(h.startswith(name.lower()) for h in known)
    ]
    assert not missing, f"cited sections not in BENCHMARKS.md's headings: {missing}"
    assert "backend rule" in " ".join(known)


def test_the_ratio_pattern_finds_a_ratio() -> None:  # the two tests above rely on it
    assert RATIO.search("ORT is 1.10x torch on the same rows")
    assert RATIO.search("onnx on CPU (1.5-1.7x torch at every load shape)")
    assert not RATIO.search("ONNX_PARALLEL_CALLS, default 2; int8 is 32x smaller")
