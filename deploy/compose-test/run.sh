#!/usr/bin/env bash
# `make compose-test`: bring docker-compose.yml up for real with podman and run a task through it.
#
# No Docker engine and no registry here: podman (Debian) builds local stand-ins for the official base images
# from Debian packages (debootstrap), the project image is built with BASE_IMAGE pointing at the local python
# base, and podman-compose runs docker-compose.yml with docker-compose.local.yml, which swaps only image names.
# Podman 4.3 ignores `depends_on: condition` and does not schedule health checks, so this script starts the
# services in dependency order and runs each container's own compose health check (`podman healthcheck run`).
# Then: the seed-notebook flow against :8000, a gRPC WatchTask against :50051 to a finished task, the
# dispatcher scaled to 3; everything is torn down at the end, also on failure. Base images are cached in
# $STATE (second runs skip them); COMPOSE_TEST_KEEP_BASE=0 removes them too.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/deploy/compose-test"
STATE="${COMPOSE_TEST_STATE:-/var/tmp/upscaling-compose-test}"
PROJECT="${COMPOSE_PROJECT_NAME:-upscaling-ct}"
PY="$ROOT/.venv/bin/python"
DEBIAN_IMAGE=localhost/upscaling-debian:bookworm
PYTHON_IMAGE=localhost/upscaling-python:3.11
POSTGRES_IMAGE=localhost/upscaling-postgres:15
RABBITMQ_IMAGE=localhost/upscaling-rabbitmq:3.10
APP_IMAGE=localhost/upscaling-service:compose-test
export COMPOSE_PROJECT_NAME="$PROJECT"
export CONTAINERS_CONF="$STATE/containers.conf" CONTAINERS_STORAGE_CONF="$STATE/storage.conf"

START=$(date +%s.%N)
PHASE_START=$START
TIMINGS=()
phase_done() {
  local now; now=$(date +%s.%N)
  TIMINGS+=("$(printf '%-28s %7.1f s' "$1" "$(echo "$now - $PHASE_START" | bc)")")
  printf '== %s done in %.1f s\n' "$1" "$(echo "$now - $PHASE_START" | bc)"
  PHASE_START=$now
}
say() { printf '== %s\n' "$*"; }

compose() {
  "$ROOT/.venv/bin/podman-compose" -p "$PROJECT" -f "$ROOT/docker-compose.yml" -f "$HERE/docker-compose.local.yml" "$@"
}

report() {
  local code=$1
  echo
  echo "== compose-test timings"
  printf '   %s\n' "${TIMINGS[@]}"
  printf '   %-28s %7.1f s\n' "total" "$(echo "$(date +%s.%N) - $START" | bc)"
  [ "$code" -eq 0 ] && echo "== compose-test PASSED" || echo "== compose-test FAILED (exit $code)"
}

teardown() {
  local code=$?
  set +e
  if [ "$code" -ne 0 ] && command -v podman >/dev/null; then
    say "failure: container states and log tails"
    podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}} {{.Status}}'
    for c in $(podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}'); do
      echo "--- $c"; podman logs --tail 25 "$c" 2>&1
    done
  fi
  if [ -f "$STATE/containers.conf" ] && command -v podman >/dev/null; then
    PHASE_START=$(date +%s.%N)
    compose down -v -t 10 >/dev/null 2>&1
    podman pod rm -f "pod_$PROJECT" >/dev/null 2>&1
    podman volume prune -f >/dev/null 2>&1
    podman image prune -f >/dev/null 2>&1   # dangling layers of earlier project builds
    if [ "${COMPOSE_TEST_KEEP_BASE:-1}" = 0 ]; then podman system prune -af --volumes >/dev/null 2>&1; fi
    phase_done "teardown"
  fi
  report "$code"
  exit "$code"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# --- 1. tools: podman, buildah, runc, debootstrap (apt), podman-compose (pip, pinned in the dev extras) ----
missing=()
for tool in podman buildah runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc debootstrap bc >/dev/null
fi
command -v bc >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bc >/dev/null
make -C "$ROOT" --no-print-directory venv >/dev/null
[ -x "$ROOT/.venv/bin/podman-compose" ] || "$PY" -m pip install -q 'podman-compose==1.6.0'
mkdir -p "$STATE"
cat > "$STATE/containers.conf" <<EOF
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"

[network]
network_backend = "netavark"
EOF
cat > "$STATE/storage.conf" <<EOF
[storage]
driver = "vfs"
runroot = "$STATE/run"
graphroot = "$STATE/storage"
EOF
# pip inside image builds trusts the machine's CA bundle (mounted read-only into the RUN steps below).
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$STATE/pip.conf"
BUILD_MOUNTS=(-v /etc/ssl/certs:/etc/ssl/certs:ro -v "$STATE/pip.conf:/etc/pip.conf:ro")
podman --version
phase_done "tools"

# --- 2. local base images from Debian packages (cached) ----------------------------------------------------
if ! podman image exists "$DEBIAN_IMAGE"; then
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1)
  mirror=${mirror:-http://deb.debian.org/debian}
  say "debootstrap bookworm from $mirror"
  rootfs="$STATE/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$STATE/debootstrap.log" 2>&1 \
    || { tail -20 "$STATE/debootstrap.log"; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi
for spec in "python:$PYTHON_IMAGE" "postgres:$POSTGRES_IMAGE" "rabbitmq:$RABBITMQ_IMAGE"; do
  name=${spec%%:*} image=${spec#*:}
  if ! podman image exists "$image"; then
    say "building $image"
    podman build -q --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" -f "$HERE/images/$name.Containerfile" \
      -t "$image" "$HERE/images" >/dev/null
  fi
done
podman images --format '   {{.Repository}}:{{.Tag}} {{.Size}}' | grep upscaling- || true
phase_done "base images"

# --- 3. the project image, BASE_IMAGE = the local python base ----------------------------------------------
# The `deps` stage is tagged so that pruning keeps it: later runs rebuild only the project's own layers.
podman build -q "${BUILD_MOUNTS[@]}" --build-arg BASE_IMAGE="$PYTHON_IMAGE" --target deps -t "$APP_IMAGE-deps" \
  "$ROOT" >/dev/null
podman build -q "${BUILD_MOUNTS[@]}" --build-arg BASE_IMAGE="$PYTHON_IMAGE" -t "$APP_IMAGE" "$ROOT" >/dev/null
podman image prune -f >/dev/null
podman images --format '   {{.Repository}}:{{.Tag}} {{.Size}}' "$APP_IMAGE"
phase_done "project image"

# --- 4. bring-up in dependency order, waiting for each compose health check --------------------------------
wait_healthy() {  # wait_healthy TIMEOUT_S SERVICE... : every container of each service passes its health check
  local timeout=$1; shift
  local deadline=$((SECONDS + timeout)) service c pending
  while :; do
    pending=()
    for service in "$@"; do
      local names
      names=$(podman ps --filter "label=io.podman.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$service" --format '{{.Names}}')
      [ -n "$names" ] || { pending+=("$service(not running)"); continue; }
      for c in $names; do podman healthcheck run "$c" >/dev/null 2>&1 || pending+=("$c"); done
    done
    [ ${#pending[@]} -eq 0 ] && return 0
    if [ $SECONDS -ge $deadline ]; then echo "not healthy after ${timeout}s: ${pending[*]}" >&2; return 1; fi
    sleep 1
  done
}

compose down -v -t 5 >/dev/null 2>&1 || true
# Published ports: 8000, 50051 and 8081 as users get them, unless taken here (then free ones, through the
# compose file's own UPSCALING_*_PORT variables).
for spec in UPSCALING_HTTP_PORT:8000 UPSCALING_GRPC_PORT:50051 UPSCALING_OPENEO_PORT:8081; do
  var=${spec%%:*} port=${spec#*:}
  if [ -z "${!var:-}" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
    say "port ${spec#*:} is taken here: $var=$port"
  fi
  export "$var=${!var:-$port}"
done
compose up -d --no-build postgres rabbitmq >"$STATE/up.log" 2>&1 || { cat "$STATE/up.log"; exit 1; }
wait_healthy 180 postgres rabbitmq
phase_done "postgres+rabbitmq healthy"

compose up -d --no-build --no-deps migrate >>"$STATE/up.log" 2>&1 || { cat "$STATE/up.log"; exit 1; }
migrate=$(podman ps -a --filter "label=io.podman.compose.project=$PROJECT" \
  --filter "label=com.docker.compose.service=migrate" --format '{{.Names}}' | head -1)
code=$(podman wait "$migrate")
podman logs "$migrate" 2>&1 | tail -2
[ "$code" = 0 ] || { echo "migrate exited with $code" >&2; exit 1; }
phase_done "migrate (one-shot)"

compose up -d --no-build --no-deps tiler local-openeo >>"$STATE/up.log" 2>&1 || { cat "$STATE/up.log"; exit 1; }
compose up -d --no-build --no-deps dispatcher monitor gateway >>"$STATE/up.log" 2>&1 \
  || { cat "$STATE/up.log"; exit 1; }
wait_healthy 180 tiler local-openeo dispatcher monitor gateway
podman ps --filter "label=io.podman.compose.project=$PROJECT" --format '   {{.Names}} {{.Status}} {{.Ports}}'
phase_done "services healthy"

# --- 5. the seed notebook against :8000, a gRPC WatchTask against :50051 -----------------------------------
"$PY" "$HERE/flow.py" notebook --http "127.0.0.1:$UPSCALING_HTTP_PORT" \
  --openeo "http://local-openeo:8081"
phase_done "seed notebook flow"
"$PY" "$HERE/flow.py" grpc --grpc "127.0.0.1:$UPSCALING_GRPC_PORT" \
  --openeo "http://local-openeo:8081"
phase_done "gRPC WatchTask"

# --- 6. three dispatchers --------------------------------------------------------------------------------------
compose up -d --no-build --no-deps --scale dispatcher=3 dispatcher >>"$STATE/up.log" 2>&1 \
  || { cat "$STATE/up.log"; exit 1; }
wait_healthy 120 dispatcher
running=$(podman ps --filter "label=io.podman.compose.project=$PROJECT" \
  --filter "label=com.docker.compose.service=dispatcher" --format '{{.Names}}' | wc -l)
echo "   dispatchers running and healthy: $running"
[ "$running" -eq 3 ] || { echo "expected 3 dispatchers, found $running" >&2; exit 1; }
phase_done "scale dispatcher=3"
