"""Measure the torn writer (in-place rewrite, a pause mid-file) against the registry's rules.

Each trial: a served prefix `beta` is rewritten in place: half of the new bytes, a pause of PAUSE_S,
the rest. The watcher runs (reconcile 100 ms) and a client embeds with `beta` in a loop; every digest
the responses name is recorded. A digest of neither the old nor the new content = a torn version served.
Variants: checksum required (files with content_sha256); no checksum with require_checksum off (the
two-read rule). Timed, so not a test (tests/unit/test_unverified_files.py is the deterministic one).

    PYTHONPATH=. python scripts/hardening/torn_writer.py PAUSE_S SETTLE_MS TRIALS   # e.g. 0.8 500 10
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.support.http import fake_app, fake_prefix_bytes, fill_folder, unverified_prefix_bytes

PAUSE_S, SETTLE_MS, TRIALS = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


def trial(root: Path, checked: bool, seed: int) -> tuple[int, int, bool]:
    folder = fill_folder(root / f"{checked}-{seed}")
    make = fake_prefix_bytes if checked else unverified_prefix_bytes
    old, new = make(seed=100 + seed), make(seed=200 + seed)
    (folder / "beta.safetensors").write_bytes(old)
    real = {hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()}
    done = threading.Event()
    torn = total = 0
    with fake_app(folder, prefix_settle_ms=SETTLE_MS, watch_reconcile_ms=100, require_checksum=checked) as (
        client,
        _,
        _,
    ):

        def writer() -> None:
            time.sleep(0.3)
            with (folder / "beta.safetensors").open("r+b") as fh:
                fh.write(new[: len(new) // 2])
                fh.flush()
                time.sleep(PAUSE_S)
                fh.write(new[len(new) // 2 :])
            time.sleep(2 * SETTLE_MS / 1000 + 0.5)
            done.set()

        threading.Thread(target=writer, daemon=True).start()
        seen_new = False
        while not done.is_set():
            r = client.post("/embed", json={"inputs": "x", "prefixes": ["beta"]})
            if r.status_code != 200:
                continue
            d = r.json()["prefixes"][0]["digest"]
            total += 1
            torn += d not in real
            seen_new |= d == hashlib.sha256(new).hexdigest()
    return torn, total, seen_new


out: dict[str, dict[str, int]] = {}
with tempfile.TemporaryDirectory() as tmp:
    for checked in (True, False):
        rows = [trial(Path(tmp), checked, s) for s in range(TRIALS)]
        out["checksum required" if checked else "no checksum, two-read rule"] = {
            "trials": TRIALS,
            "trials serving a torn version": sum(1 for t, _, _ in rows if t),
            "torn responses": sum(t for t, _, _ in rows),
            "responses": sum(n for _, n, _ in rows),
            "trials ending on the new version": sum(1 for *_, s in rows if s),
        }
print(json.dumps({"pause_s": PAUSE_S, "settle_ms": SETTLE_MS, **out}, indent=1))
