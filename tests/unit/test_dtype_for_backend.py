"""A dtype the chosen backend cannot serve is a usage error (exit status 2) naming the choices, before
anything loads: int8 is the ONNX backend's (CPU), bfloat16 torch's, float16 in ONNX is CUDA-only."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from service.backend import choose_backend
from service.cli import app
from service.config import BACKEND_DTYPES, Settings
from tests.support.cli_output import flat


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ["--backend", "torch", "--dtype", "int8"],
            "dtype int8 is not served by backend torch (choose auto | float32 | float16 | bfloat16)",
        ),
        (
            ["--backend", "onnx", "--dtype", "bfloat16"],
            "dtype bfloat16 is not served by backend onnx (choose auto | float32 | float16 | int8)",
        ),
        (["--backend", "auto", "--device", "cuda", "--dtype", "int8"], "dtype int8 runs on the CPU only"),
    ],
)
def test_a_dtype_the_backend_cannot_serve_exits_2_naming_the_choices(args: list[str], fragment: str) -> None:
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 2, result.output
    assert "--dtype / PREFIX_EMBED_DTYPE" in flat(result.output)
    assert fragment in flat(result.output)


def test_the_same_rule_holds_for_the_environment() -> None:
    result = CliRunner().invoke(
        app, ["serve"], env={"PREFIX_EMBED_BACKEND": "torch", "PREFIX_EMBED_DTYPE": "int8"}
    )
    assert result.exit_code == 2, result.output
    assert "choose auto | float32 | float16 | bfloat16" in flat(result.output)


def test_every_backend_dtype_pair_in_the_table_is_accepted() -> None:
    for backend, dtypes in BACKEND_DTYPES.items():
        for dtype in dtypes:
            assert Settings(backend=backend, dtype=dtype).dtype == dtype  # type: ignore[arg-type]


def test_auto_serves_int8_with_onnx() -> None:
    assert choose_backend("auto", "cpu", "int8", ort_installed=True).backend == "onnx"
    assert choose_backend("auto", "cpu", "bfloat16", ort_installed=True).backend == "torch"
