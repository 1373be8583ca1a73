"""The GPU check script (issue 27 item 5) runs end to end on the CPU with ``--dry-run``, so it cannot rot
while no GPU is lent: every step reports, parity is tight, the trunk sweep has an MFU per row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # loads MiniLM several times, exports it to ONNX

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_on_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path), "--dry-run"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] is True
    assert result["device"] == "cpu"
    assert result["parity"]["float32"]["max_abs_diff"] < 1e-4  # the same engine on the same device
    assert result["parity"]["bfloat16"]["min_cosine"] > 0.95
    assert result["ort"]["providers"] == ["CPUExecutionProvider"]
    assert result["ort"]["max_abs_diff"] < 1e-4
    rows = result["trunk"]["rows"]
    assert {(r["P"], r["S"]) for r in rows} == {(1, 0), (1, 3), (2, 0), (2, 3)}
    assert all(r["mfu"] > 0 for r in rows)
    assert result["shapes"] == {"skipped": "dry run"}
