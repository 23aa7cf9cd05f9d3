#!/bin/sh
# Container entry point: the first argument names the service.
set -e
service="${1:-gateway}"
[ $# -gt 0 ] && shift
case "$service" in
  tiler) exec python -m services.tiler "$@" ;;
  dispatcher) exec python -m services.dispatcher "$@" ;;
  monitor) exec python -m services.monitor "$@" ;;
  gateway) exec python -m gateway "$@" ;;
  migrate) exec python -m upscaling.migrations "$@" ;;
  local-openeo) exec python -m local_openeo "$@" ;;
  *) echo "unknown service: $service (tiler, dispatcher, monitor, gateway, migrate, local-openeo)" >&2; exit 64 ;;
esac
