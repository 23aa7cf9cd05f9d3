#!/usr/bin/env bash
# Tools `make test` needs beyond Python packages: `kubectl` renders the Kubernetes overlays (Debian's
# kubernetes-client is enough) and `podman` backs `podman-compose config` (tests/test_deploy_manifests.py).
# Installed with apt where missing and possible; otherwise those tests say what to install.
set -euo pipefail
missing=()
command -v kubectl >/dev/null || missing+=(kubernetes-client)
command -v podman >/dev/null || missing+=(podman)
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
  echo "installing ${missing[*]} (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "warning: ${missing[*]} missing and not installable here (needs apt as root); deployment tests will fail" >&2
fi
