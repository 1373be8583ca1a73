"""Scale-out on Ray Serve: the service as a Serve deployment (``ray_app``), the proxy's error
middleware (``ray_proxy``) and ``python -m service ray-serve`` (``ray_launch``). Needs the ``ray``
extra; nothing else in the package imports this one."""
