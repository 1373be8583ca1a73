"""The in-step part of ``bench ray`` (service/bench/ray_in_step.py) against one app on the fake encoder
(one "replica": its responses carry a replica id as Ray's middleware sets it): every change it makes
is one the API accepts, and each is seen through the same registry and watcher as in a replica."""

from __future__ import annotations

from pathlib import Path

import httpx

from service.bench.ray_in_step import IN_STEP_TARGET_S, in_step_round, listed, replica_seconds, run_in_step
from service.serving import REPLICA_HEADER
from tests.support.http import fake_app, fill_folder

# names after "base": the built-in base is listed (enabled) too, and cannot be disabled
NAMES = ("sentiment", "topic")


def as_replica(response: httpx.Response) -> None:
    response.headers[REPLICA_HEADER] = "replica-1"


def test_a_round_changes_a_file_prefix_and_puts_everything_back(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes", NAMES)
    with fake_app(folder) as (client, _, _):
        client.event_hooks["response"].append(as_replica)
        before = listed(client.get("/prefixes").json())
        took = in_step_round(client, folder, replicas=1, tag="t")
        assert set(took) == {"patch_disable", "patch_enable", "file_added", "file_removed"}
        assert all(s >= 0 for s in took.values())
        assert listed(client.get("/prefixes").json()) == before  # enabled again, the dropped file gone
    assert sorted(p.stem for p in folder.glob("*.safetensors")) == sorted(NAMES)


def test_replica_seconds_waits_for_every_replica(tmp_path: Path) -> None:
    with fake_app(fill_folder(tmp_path / "prefixes", NAMES)) as (client, _, _):
        client.event_hooks["response"].append(as_replica)
        assert set(replica_seconds(client, "/prefixes", lambda d: "topic" in listed(d), 1)) == {"replica-1"}


def test_run_in_step_summarises_against_the_target(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes", NAMES)
    with fake_app(folder) as (client, _, _):
        client.event_hooks["response"].append(as_replica)
        result = run_in_step(client, folder, replicas=1, rounds=2)
    assert len(result["rounds"]) == 2
    summary = result["summary"]
    assert summary["changes"] == 8
    assert summary["target_s"] == IN_STEP_TARGET_S
    assert summary["within_target"] == (summary["max_s"] <= IN_STEP_TARGET_S)
