"""`make image-check`: the CPU image built with podman and checked end to end (scripts/image_check.sh)."""
