"""The bounded hot-swap soak (``python -m service bench soak``) against a real server for a minute:
load while prefixes are rewritten in place, replaced by rename and toggled with PATCH. Every
vector of every 200 is checked against the reference encoder for the digest the response names."""

from __future__ import annotations

import pytest

from service.bench.soak import SoakConfig, run_soak

# a minute of load, plus the server's start and the reference vectors of every version served
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_soak_serves_no_torn_version_no_wrong_vector_and_no_5xx() -> None:
    result = run_soak(SoakConfig(duration_s=60.0, concurrency=6, swap_every_s=1.0, texts=8))
    summary = result.summary()
    assert summary["torn_versions"] == 0, summary
    assert summary["mismatches"] == 0, summary
    assert summary["server_errors"] == 0, summary
    assert summary["vectors_checked"] > 0, summary
    assert min(summary["swaps_in_place"], summary["swaps_by_rename"], summary["patch_toggles"]) >= 1, summary
    # every answer is a 200, or a 409 for the prefix that PATCH had disabled at that moment
    assert set(summary["responses_by_status"]) <= {"200", "409"}, summary
    assert len(result.versions_served) > len(("s0", "s1", "s2", "s3")), summary  # swaps were served
