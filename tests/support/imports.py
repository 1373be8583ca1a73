"""What importing some modules loads, seen in a fresh interpreter (the test process has loaded
everything already): the checks that a light path stays light."""

from __future__ import annotations

import subprocess
import sys


def loaded_after(imports: str, *packages: str) -> list[str]:
    """The modules of ``packages`` (each the package itself or anything below it) that a fresh
    interpreter holds after ``import <imports>`` (a comma-separated list of modules)."""
    code = (
        f"import sys, {imports}\n"
        f"want = {packages!r}\n"
        "print(','.join(sorted(m for m in sys.modules if any(m == p or m.startswith(p + '.') for p in want))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return [m for m in out.stdout.strip().split(",") if m]
