"""The checks of one running container of the image: start, same vectors as the local service,
PATCH + restart + file ownership, hot-load, and the SIGTERM drain."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from scripts.image_check import probes
from scripts.image_check.podman import CheckFailed, Podman, check, tail
from tests.support.waiting import wait_until

PREFIX_DIR = "/app/prefixes"  # the image's PREFIX_EMBED_PREFIX_DIR
GRACE_S = 45  # README and compose: --stop-timeout 45 / stop_grace_period: 45s


def copy_prefixes(source: Path, target: Path, uid: int) -> None:
    """A fresh copy of the shipped prefixes, owned by ``uid`` (the host user the image is built for)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        shutil.chown(path, uid, uid)


def owners(folder: Path) -> dict[str, tuple[int, int, float]]:
    """``{relative path: (uid, mode, mtime)}`` of every file under ``folder``."""
    out = {}
    for path in folder.rglob("*"):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(folder))] = (st.st_uid, st.st_mode & 0o777, st.st_mtime)
    return out


@dataclass
class Container:
    """One container of ``tag``, published on 127.0.0.1:``port``, the prefix copy bind-mounted."""

    podman: Podman
    tag: str
    name: str
    mount: Path
    admin_key: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> None:
        if self.podman.state(self.name).get("Running") is not True:
            raise CheckFailed(f"container {self.name} stopped:\n{tail(self.podman.logs(self.name))}")

    def start(self) -> float:
        """``podman run`` of the image's own command; seconds from the run to /ready (cold: no ONNX cache)."""
        self.podman.remove_container(self.name)
        started = time.monotonic()
        self.podman.run(
            "run", "--detach", "--name", self.name, "--init",
            "--stop-timeout", str(GRACE_S),
            "--publish", f"127.0.0.1:{self.port}:8080",
            "--volume", f"{self.mount}:{PREFIX_DIR}",
            "--env", f"PREFIX_EMBED_ADMIN_KEY={self.admin_key}",
            self.tag,
        )  # fmt: skip
        probes.wait_ready(self.url, 600, self.alive)
        return time.monotonic() - started

    def stop(self) -> tuple[float, int]:
        """``podman stop`` (SIGTERM, SIGKILL after the grace period): seconds taken and exit code."""
        started = time.monotonic()
        self.podman.run("stop", "--time", str(GRACE_S), self.name, timeout=GRACE_S + 60)
        seconds = time.monotonic() - started
        return seconds, int(str(self.podman.state(self.name)["ExitCode"]))

    def restart(self) -> float:
        """Stop (checked clean), start again; seconds from ``podman start`` to /ready (warm)."""
        seconds, code = self.stop()
        check(code == 0, f"stop before the restart: exit code {code}\n{tail(self.podman.logs(self.name))}")
        started = time.monotonic()
        self.podman.run("start", self.name)
        probes.wait_ready(self.url, 600, self.alive)
        return time.monotonic() - started

    def export_lines(self) -> list[str]:
        return [line for line in self.podman.logs(self.name).splitlines() if "ONNX" in line or "onnx" in line]


def check_same_vectors(container: Container, reference: dict[str, Any]) -> str:
    body = probes.embed(container.url)
    diff = probes.same_vectors(body, reference, "container vs local service")
    names = [p["name"] for p in body["prefixes"]]
    return f"{len(probes.TEXTS)} texts x {len(names)} vectors ({', '.join(names)}): max |diff| {diff:.2g}, digests equal"


def check_patch_restart_ownership(container: Container, uid: int) -> dict[str, str]:
    """PATCH one prefix off (admin key enforced), restart, and find it still off; every file the
    container wrote into the bind mount is owned by ``uid`` on the host."""
    table = probes.prefix_table(container.url)
    name = next(n for n, p in table.items() if p["enabled"] and p["kind"] == "native")
    refused = probes.patch_prefix(container.url, name, False, key=None)
    check(refused.status_code == 401, f"PATCH without the admin key: {refused.status_code} {refused.text}")
    before = owners(container.mount)
    r = probes.patch_prefix(container.url, name, False, key=container.admin_key)
    check(r.status_code == 200 and r.json()["enabled"] is False, f"PATCH {name}: {r.status_code} {r.text}")
    after = owners(container.mount)
    written = {path: st for path, st in after.items() if before.get(path) != st}
    check(written, f"PATCH wrote nothing into the bind mount {container.mount}")
    wrong = {path: st for path, st in written.items() if st[0] != uid}
    check(not wrong, f"files written by the container not owned by uid {uid}: {wrong}")
    warm = container.restart()
    table = probes.prefix_table(container.url)
    check(
        table[name]["enabled"] is False, f"{name} enabled again after the restart: the PATCH did not persist"
    )
    r = httpx.post(f"{container.url}/embed", json={"inputs": ["x"], "prefixes": [name]}, timeout=60)
    check(
        r.status_code == 409 and "disabled" in r.text, f"{name} after the restart: {r.status_code} {r.text}"
    )
    r = probes.patch_prefix(container.url, name, True, key=container.admin_key)
    check(
        r.status_code == 200 and r.json()["enabled"] is True,
        f"PATCH {name} back on: {r.status_code} {r.text}",
    )
    probes.embed(container.url)  # the default set is whole again
    files = ", ".join(f"{p} (uid {st[0]}, mode {st[1]:o})" for p, st in sorted(written.items()))
    return {
        "PATCH + restart": f"{name} disabled (401 without the admin key), still disabled (409) after a restart",
        "file ownership": f"written into the bind mount: {files}; all owned by host uid {uid}",
        "warm start to ready": f"{warm:.1f} s (podman start, ONNX graphs reused)",
    }


def check_hot_load(container: Container) -> str:
    """Drop a copy of a shipped prefix into the bind mount under a new name (as the host's root,
    mode 0644): it is hot-loaded, with the original's digest and the original's vectors."""
    table = probes.prefix_table(container.url)
    name = next(n for n, p in table.items() if p["enabled"] and p["kind"] == "native")
    dropped = f"dropped-{name}"
    started = time.monotonic()
    shutil.copyfile(container.mount / f"{name}.safetensors", container.mount / f"{dropped}.safetensors")

    def loaded() -> bool:
        entry = probes.prefix_table(container.url).get(dropped)
        return bool(entry and entry["enabled"] and not entry["stale"])

    wait_until(loaded, 60, f"{dropped} hot-loaded", poll=0.1)
    seconds = time.monotonic() - started
    check(
        probes.prefix_table(container.url)[dropped]["digest"] == table[name]["digest"], "digest of the copy"
    )
    got = probes.vectors(probes.embed(container.url, [name, dropped]))
    diff = float(abs(got[name] - got[dropped]).max())
    check(diff <= probes.TOLERANCE, f"the dropped copy's vectors differ from {name}'s by {diff:.3g}")
    return f"{dropped}.safetensors served {seconds:.1f} s after the copy, vectors = {name}'s (max |diff| {diff:.2g})"


def check_sigterm_drain(container: Container) -> str:
    """Requests in flight, then ``podman stop``: every one answered in full, exit 0 within the grace."""
    flight = probes.InFlight(container.url)
    flight.start()
    signalled = time.monotonic()
    seconds, code = container.stop()
    flight.join(GRACE_S + 30)
    statuses = sorted({status for status, _, _ in flight.results})
    check(not flight.errors, f"requests lost at SIGTERM: {flight.errors}")
    check(statuses == [200], f"statuses after SIGTERM: {statuses}")
    check(all(items == flight.texts for _, items, _ in flight.results), "a drained answer is incomplete")
    drained = sum(at > signalled for _, _, at in flight.results)
    check(drained >= 1, "every request ended before SIGTERM: nothing was drained")
    logs = container.podman.logs(container.name)
    check(code == 0, f"exit code {code} after SIGTERM\n{tail(logs)}")
    check(seconds < GRACE_S, f"stop took {seconds:.1f} s: the grace period ({GRACE_S} s) ran out")
    check("Application shutdown complete" in logs, f"no clean shutdown in the log\n{tail(logs)}")
    try:
        httpx.get(f"{container.url}/health", timeout=2)
        raise CheckFailed("the service still answers after the stop")
    except httpx.TransportError:
        pass
    return (
        f"{len(flight.results)} requests x {flight.texts} texts in flight, {drained} answered after "
        f"SIGTERM, all 200 and complete; exit 0 after {seconds:.1f} s (grace {GRACE_S} s)"
    )
