# The service image plus Ray Serve, for KubeRay (deploy/kuberay/rayservice.yaml) and `ray-serve`.
#   docker build -t prefix-embed:gpu .                                   # the service image
#   docker build -f deploy/ray.Dockerfile -t prefix-embed:gpu-ray .      # this one
# The ray pin is the `ray` extra of pyproject.toml (tests/ray/test_deploy_manifests.py checks it).
ARG BASE=prefix-embed:gpu
FROM ${BASE}
USER 0
RUN python -m pip install --no-cache-dir "ray[serve]==2.60.0"
# Ray's proxy answers a request whose replica died with the service's JSON error (502).
ENV RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=service.serving.ray_proxy:proxy_middlewares
USER 1000:1000
EXPOSE 8000 6379 8265
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service", "ray-serve", "--host", "0.0.0.0", "--port", "8000"]
