"""Scale-out on Ray Serve: the service as a Serve deployment (``ray_app``), the proxy's error
middleware (``ray_proxy``) and ``python -m service ray-serve`` (``ray_launch``). Needs the ``ray``
extra; nothing else in the package imports this one."""

# The response header naming the replica that answered (set by ray_app's middleware; read by the Ray
# benchmark and tests). Here, not in ray_app, so that reading it needs no Ray.
REPLICA_HEADER = "x-replica-id"
