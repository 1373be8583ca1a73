"""How ``ray-serve``'s options become the Serve deployment's (no cluster: Ray validates the options
when the deployment is built). That every replica runs with the settings is checked on a cluster
(``tests/ray/test_ray_serve.py``: each replica's ``/info``)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray.serve", reason="needs the `ray` extra: pip install .[ray]")

from service.config import Settings  # noqa: E402
from service.serving.ray_app import Scaling, build_deployment  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.mark.parametrize(("text", "bounds"), [("1:4", (1, 4)), ("0:2", (0, 2)), (" 2 : 2 ", (2, 2))])
def test_autoscale_bounds(text: str, bounds: tuple[int, int]) -> None:
    assert Scaling.parse_autoscale(text) == bounds


@pytest.mark.parametrize("text", ["4", "a:b", "3:1", "0:0", "-1:2", "1:2:3"])
def test_bad_autoscale_bounds_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--autoscale"):
        Scaling.parse_autoscale(text)


def test_fixed_replicas_and_resources_reach_the_deployment() -> None:
    settings = Settings(request_timeout_s=12)
    scaling = Scaling(replicas=3, replica_cpus=0.5, replica_gpus=1)
    deployment = build_deployment(settings, scaling)  # Ray accepted the options
    assert deployment.num_replicas == 3
    assert deployment.max_ongoing_requests == 64
    assert deployment.ray_actor_options == {"num_cpus": 0.5, "num_gpus": 1}
    options = scaling.deployment_options(settings)  # what build_deployment gave Ray
    assert "autoscaling_config" not in options
    assert options["graceful_shutdown_timeout_s"] == 13  # in-flight requests get their whole deadline


def test_autoscaling_reaches_the_deployment() -> None:
    scaling = Scaling(autoscale=(0, 4))
    build_deployment(Settings(), scaling)  # Ray accepted the options
    auto = scaling.deployment_options(Settings())["autoscaling_config"]
    assert "num_replicas" not in scaling.deployment_options(Settings())
    assert (auto.min_replicas, auto.max_replicas) == (0, 4)
    assert auto.initial_replicas == 1
    assert auto.target_ongoing_requests == 16
