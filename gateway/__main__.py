"""`python -m gateway`: the HTTP/WebSocket bridge and the public gRPC API, in GATEWAY_WORKERS worker processes
sharing the ports (see `gateway.workers`)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from gateway import workers


def cli() -> None:
    workers.use_system_allocator()  # (re-executes this command once, before anything else is imported)
    count = workers.worker_count()
    metrics_dir = None
    if count > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Before prometheus_client is imported: the workers' metrics are shared through files, /metrics sums them.
        metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from prometheus_client import multiprocess

    from gateway.server import main
    from upscaling import event_loop
    from upscaling.config import load_settings
    from upscaling.logs import configure_logging

    settings = load_settings()
    configure_logging("gateway", settings.log_level, settings.log_format)
    ws_deflate = os.environ.get("GATEWAY_WS_DEFLATE", "true").strip().lower() not in ("0", "false", "no")
    try:
        code = workers.run(count, lambda index: event_loop.run(main(settings, index, ws_deflate)),
                           on_exit=multiprocess.mark_process_dead if count > 1 else None)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    cli()
