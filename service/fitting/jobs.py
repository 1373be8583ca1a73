"""The server's fit jobs (``POST /heads/{name}/fit``): one background task per fit, its progress and
its result, kept in memory (per replica) until :data:`KEEP` newer jobs have finished.

At most one fit of a head name runs at a time (another gets 409), and at most ``fit_max_running``
fits in all (429 with Retry-After). A job that fails records the error's message when it is one of
the service's own (a bad select, a time limit, an input prefix gone), else a generic one (details in
the server log). Stopping the server cancels running jobs; a cancelled or failed job writes nothing.

This module stays light (no scikit-learn): the fitting code is imported by the first job that runs,
so the app starts without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from service.errors import FitJobNotFound, FitRunning, PrefixEmbedError, shown

log = logging.getLogger(__name__)

KEEP = 64  # finished jobs remembered (the oldest is forgotten first)
State = Literal["running", "succeeded", "failed", "cancelled"]


@dataclass
class FitJob:
    """One fit: its state, the stage it is in with its count (updated from the fit's thread: plain
    assignments), and its result or error."""

    id: str
    name: str
    select: str
    examples: int
    state: State = "running"
    stage: str = "queued"
    done: int = 0
    total: int = 0
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"/heads/{self.name}/fit/{self.id}"

    def progress(self, stage: str, done: int, total: int) -> None:
        self.stage, self.done, self.total = stage, done, total

    def doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "head": self.name,
            "url": self.url,
            "state": self.state,
            "select": self.select,
            "examples": self.examples,
            "progress": {"stage": self.stage, "done": self.done, "total": self.total},
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "result": self.result,
            "error": self.error,
        }


class FitJobs:
    """The fit jobs of one server process."""

    def __init__(self, max_running: int = 1) -> None:
        self.max_running = max_running
        self._jobs: OrderedDict[str, FitJob] = OrderedDict()

    def running(self) -> list[FitJob]:
        return [j for j in self._jobs.values() if j.state == "running"]

    def start(
        self, name: str, select: str, examples: int, work: Callable[[FitJob], Awaitable[dict[str, Any]]]
    ) -> FitJob:
        """Run ``work(job)`` as a background task; its return value is the job's result."""
        running = self.running()
        same = [j for j in running if j.name == name]
        if same:
            raise FitRunning(f"a fit of head {shown(name)} is running: GET {same[0].url}")
        if len(running) >= self.max_running:
            raise FitRunning(
                f"{len(running)} fit(s) running, the most this server runs at once (fit_max_running="
                f"{self.max_running}); retry later",
                status_code=429,
            )
        job = FitJob(secrets.token_hex(8), name, select, examples)
        self._jobs[job.id] = job
        job.task = asyncio.create_task(self._run(job, work), name=f"fit-{name}-{job.id}")
        self._forget_old()
        return job

    async def _run(self, job: FitJob, work: Callable[[FitJob], Awaitable[dict[str, Any]]]) -> None:
        try:
            job.result = await work(job)
            job.state = "succeeded"
            job.stage = "done"
        except asyncio.CancelledError:
            job.state = "cancelled"
            job.error = {
                "message": "the server stopped during the fit",
                "type": "server_error",
                "code": "cancelled",
            }
            raise
        except PrefixEmbedError as exc:
            job.state = "failed"
            job.error = {"message": exc.message, "type": exc.type, "code": exc.code}
        except Exception:
            log.exception("fit of head %s (job %s) failed", job.name, job.id)
            job.state = "failed"
            job.error = {
                "message": "the fit failed; see the server log",
                "type": "server_error",
                "code": "fit_failed",
            }
        finally:
            job.finished_at = time.time()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state != "running"]
        for job in finished[: max(0, len(finished) - KEEP)]:
            del self._jobs[job.id]

    def get(self, name: str, job_id: str) -> FitJob:
        job = self._jobs.get(job_id)
        if job is None or job.name != name:
            raise FitJobNotFound(
                f"no fit job {shown(job_id)} of head {shown(name)} on this server (jobs are kept in memory, "
                f"per replica, the last {KEEP} finished)"
            )
        return job

    async def close(self) -> None:
        """Cancel the running jobs and wait for them."""
        tasks = [j.task for j in self.running() if j.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
