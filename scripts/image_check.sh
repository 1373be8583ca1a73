#!/usr/bin/env bash
# `make image-check`: build the CPU image with podman and check it end to end on this machine.
#
# The machines here have no Docker daemon and reach no container registry, but they reach Debian's
# archive and PyPI (README, "Deploy": the image check). So, as root:
#   1. install podman, runc and mmdebstrap if missing, and configure podman (runc, cgroupfs, no
#      default ulimits: the sandbox may not raise rlimits);
#   2. make a Debian bookworm base with mmdebstrap and import it (reused while it exists);
#   3. hand over to scripts/image_check/ (Python), which builds the CPU image FROM that base and
#      checks it: /ready, the same vectors as the local service, PATCH + restart, file ownership,
#      SIGTERM drain, hot-load, the compose file's CPU profile; it prints sizes and timings.
# Every step asserts; the first failure stops the check with a non-zero exit.
#
#   scripts/image_check.sh [--record] [--fresh-base] [--keep] [--no-compose]
# --record: a passing run's output becomes docs/image-check.txt (`make image-check` records).
# Environment: IMAGE_CHECK_DIR (work folder, default /var/tmp/prefix-embed-image-check),
# PYTHON (the venv that runs the local reference service, default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${IMAGE_CHECK_DIR:-/var/tmp/prefix-embed-image-check}
PYTHON=${PYTHON:-.venv/bin/python}
BASE_IMAGE=localhost/debian:bookworm
CONF=/etc/containers/containers.conf

step() { printf '\n== %s\n' "$*"; }
fail() {
    echo "image-check: FAILED: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || fail "run as root (podman builds and runs rootful here)"
[ -x "$PYTHON" ] || fail "no $PYTHON: run 'make install-dev' first (the local reference service)"
mkdir -p "$WORK"

fresh_base=0
record=0
args=()
for arg in "$@"; do
    case "$arg" in
        --fresh-base) fresh_base=1 ;;
        --record) record=1 ;;
        *) args+=("$arg") ;;
    esac
done

check() {
step "1. podman, runc, mmdebstrap"
missing=()
for tool in podman runc mmdebstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} from the Debian archive"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc mmdebstrap
fi
for tool in podman runc mmdebstrap; do
    command -v "$tool" >/dev/null || fail "$tool is still missing after apt-get install"
done
if [ ! -e "$CONF" ]; then
    echo "writing $CONF"
    mkdir -p "$(dirname "$CONF")"
    cat >"$CONF" <<'EOF'
# Written by prefix-embed's scripts/image_check.sh for this sandbox:
# it may not raise rlimits (every run would fail in setrlimit), and crun refuses the hybrid
# cgroup layout, where runc with cgroupfs works.
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
fi
for setting in 'default_ulimits = \[\]' 'runtime = "runc"' 'cgroup_manager = "cgroupfs"'; do
    grep -q "^$setting" "$CONF" || fail "$CONF exists without '$setting': add it (see the comment in $0)"
done
podman --version
[ "$(podman info --format '{{.Host.OCIRuntime.Name}}')" = runc ] || fail "podman does not use runc"

step "2. the Debian bookworm base image"
if [ "$fresh_base" = 1 ] || ! podman image exists "$BASE_IMAGE"; then
    start=$(date +%s)
    rm -f "$WORK/base.tar"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$WORK/base.tar"
    podman import --quiet "$WORK/base.tar" "$BASE_IMAGE" >/dev/null
    rm -f "$WORK/base.tar"
    echo "made $BASE_IMAGE with mmdebstrap in $(($(date +%s) - start)) s"
else
    echo "reusing $BASE_IMAGE (made $(podman image inspect --format '{{.Created}}' "$BASE_IMAGE"); --fresh-base remakes it)"
fi
podman run --rm --network host "$BASE_IMAGE" python3 --version

step "3. build and check the image"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (+ changes)'), load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
PYTHONPATH=. "$PYTHON" -m scripts.image_check --work "$WORK" --base-image "$BASE_IMAGE" "${args[@]}"
}

log="$WORK/image-check.log"
set +e
check 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" = 0 ] && [ "$record" = 1 ]; then
    cp "$log" docs/image-check.txt
    echo "recorded in docs/image-check.txt"
fi
exit "$status"
