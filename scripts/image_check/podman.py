"""The podman commands of the image check: every call logged, every failure an exception with its output."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class CheckFailed(AssertionError):
    """A step of the image check did not hold; the message says which and why."""


@dataclass
class Podman:
    """Runs ``podman`` (or podman-compose) and records each command line, for the report."""

    log_dir: Path
    commands: list[str]

    def run(
        self,
        *args: str,
        timeout: float = 600,
        check: bool = True,
        log: str | None = None,
        exe: str = "podman",
        env: dict[str, str] | None = None,
        record: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``EXE ARGS`` with ``env`` added: output captured (or written to ``log_dir/log``), raised on
        a non-zero exit. ``record``: listed among the commands of the report (not the polls)."""
        argv = [exe, *args]
        if record:
            self.commands.append(redacted(shlex.join([*(f"{k}={v}" for k, v in (env or {}).items()), *argv])))
        full_env = {**os.environ, **(env or {})}
        if log is None:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env)
            output = done.stdout + done.stderr
        else:
            path = self.log_dir / log
            with path.open("w") as out:
                done = subprocess.run(
                    argv, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout, env=full_env
                )
            output = path.read_text(errors="replace")
        if check and done.returncode != 0:
            raise CheckFailed(f"`{shlex.join(argv)}` exited {done.returncode}:\n{tail(output)}")
        return done

    def build(self, tag: str, build_args: dict[str, str], volumes: Sequence[str]) -> tuple[float, float]:
        """``podman build`` of the repository's Dockerfile: seconds until the image is tagged, and
        until podman exits (podman 4.3 lingers for minutes after a large build, cleaning up)."""
        # docker format: OCI images drop HEALTHCHECK (podman warns and ignores it).
        args = ["build", "--format", "docker", "--network", "host", "--layers", "-t", tag, "-f", "Dockerfile"]
        for volume in volumes:
            args += ["-v", volume]
        for name, value in build_args.items():
            args += ["--build-arg", f"{name}={value}"]
        argv = ["podman", *args, "."]
        self.commands.append(shlex.join(argv))
        log = self.log_dir / "build.log"
        start = time.monotonic()
        tagged = None
        with log.open("w") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True)
            while proc.poll() is None:
                if tagged is None and "Successfully tagged" in log.read_text(errors="replace"):
                    tagged = time.monotonic() - start
                time.sleep(1)
        total = time.monotonic() - start
        if proc.returncode != 0:
            raise CheckFailed(
                f"`{shlex.join(argv)}` exited {proc.returncode}:\n{tail(log.read_text(errors='replace'))}"
            )
        return (tagged if tagged is not None else total), total

    def inspect(self, kind: str, name: str) -> dict[str, object]:
        """``podman KIND inspect NAME`` (image or container) as one JSON object."""
        [found] = json.loads(self.run(kind, "inspect", name, record=False).stdout)
        return found

    def exists(self, kind: str, name: str) -> bool:
        return self.run(kind, "exists", name, check=False, record=False).returncode == 0

    def remove_container(self, name: str) -> None:
        if self.exists("container", name):
            self.run("rm", "--force", "--time", "5", name)

    def state(self, name: str) -> dict[str, object]:
        state = self.inspect("container", name)["State"]
        assert isinstance(state, dict)
        return state

    def logs(self, name: str) -> str:
        done = self.run("logs", name, check=False, record=False)
        return done.stdout + done.stderr


def redacted(command: str) -> str:
    """A command line for the report, without the value of a key."""
    return re.sub(r"(PREFIX_EMBED_(?:ADMIN_KEY|API_KEYS)=)\S+", r"\1<random>", command)


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def check(condition: object, message: str) -> None:
    """Raise :class:`CheckFailed` with ``message`` unless ``condition`` holds (works under ``python -O``)."""
    if not condition:
        raise CheckFailed(message)
