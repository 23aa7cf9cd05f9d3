#!/usr/bin/env bash
# Tools `make test` needs beyond Python packages, installed with apt where missing and possible:
# `kubectl` renders the Kubernetes overlays (Debian's kubernetes-client is enough) and `podman` backs
# `podman-compose config` (tests/test_deploy_manifests.py); `chromium` is the browser Playwright drives in the
# map page tests (tests/test_map_page.py: Playwright cannot download its own browsers here); `node`/`npm` install
# the map page's libraries and run the Node.js client example (examples/node). Otherwise those tests say what to
# install.
set -euo pipefail
missing=()
command -v kubectl >/dev/null || missing+=(kubernetes-client)
command -v podman >/dev/null || missing+=(podman)
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
  echo "installing ${missing[*]} (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "warning: ${missing[*]} missing and not installable here (needs apt as root); the tests needing them fail" >&2
fi
