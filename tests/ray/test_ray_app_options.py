"""How ``ray-serve``'s options become the Serve deployment's (no cluster: Ray validates the options
when the application is built)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray.serve", reason="needs the `ray` extra: pip install .[ray]")

from service.config import Settings  # noqa: E402
from service.serving.ray_app import Scaling, build_application  # noqa: E402

pytestmark = pytest.mark.ray


def deployment_config(app):  # the one deployment of the application, as Ray will run it
    return app._bound_deployment._deployment_config


@pytest.mark.parametrize(("text", "bounds"), [("1:4", (1, 4)), ("0:2", (0, 2)), (" 2 : 2 ", (2, 2))])
def test_autoscale_bounds(text: str, bounds: tuple[int, int]) -> None:
    assert Scaling.parse_autoscale(text) == bounds


@pytest.mark.parametrize("text", ["4", "a:b", "3:1", "0:0", "-1:2", "1:2:3"])
def test_bad_autoscale_bounds_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--autoscale"):
        Scaling.parse_autoscale(text)


def test_fixed_replicas_and_resources_reach_the_deployment() -> None:
    settings = Settings(request_timeout_s=12)
    app = build_application(settings, Scaling(replicas=3, replica_cpus=0.5, replica_gpus=1))
    cfg = deployment_config(app)
    assert cfg.num_replicas == 3
    assert cfg.autoscaling_config is None
    assert cfg.graceful_shutdown_timeout_s == 13  # in-flight requests get their whole deadline
    assert cfg.max_ongoing_requests == 64
    options = app._bound_deployment._replica_config.ray_actor_options
    assert (options["num_cpus"], options["num_gpus"]) == (0.5, 1)


def test_autoscaling_reaches_the_deployment() -> None:
    app = build_application(Settings(), Scaling(autoscale=(0, 4)))
    cfg = deployment_config(app)
    assert (cfg.autoscaling_config.min_replicas, cfg.autoscaling_config.max_replicas) == (0, 4)
    assert cfg.autoscaling_config.initial_replicas == 1
    assert cfg.autoscaling_config.target_ongoing_requests == 16


def test_the_settings_travel_to_every_replica() -> None:
    settings = Settings(watch_mode="poll", watch_poll_ms=250, max_client_batch=9)
    app = build_application(settings, Scaling())
    assert app._bound_deployment.init_args == (settings,)
