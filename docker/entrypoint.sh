#!/bin/sh
# Container entry point: the first argument names the service, the rest goes to it.
set -e
service="${1:-gateway}"
[ $# -gt 0 ] && shift
case "$service" in
  tiler) exec python -m services.tiler "$@" ;;
  dispatcher) exec python -m services.dispatcher "$@" ;;
  monitor) exec python -m services.monitor "$@" ;;
  gateway) exec python -m gateway "$@" ;;
  migrate) exec python -m upscaling.migrations "$@" ;;
  accounts) exec python -m upscaling.accounts "$@" ;;
  local-openeo) exec python -m local_openeo "$@" ;;
  health) exec python -m upscaling.healthcheck "$@" ;;
  *) echo "unknown service: $service (tiler, dispatcher, monitor, gateway, migrate, accounts, local-openeo, health)" >&2
     exit 64 ;;
esac
