"""``python -m local_openeo``: run the local openEO backend and print its URL."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from local_openeo.app import create_app
from local_openeo.backend import BACKEND
from local_openeo.config import API_PREFIX, Settings, load_settings
from upscaling import event_loop


async def serve(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; prints ``local-openeo listening on <url> ...`` once bound."""
    app = create_app(settings)
    access_log = logging.getLogger("aiohttp.access") if settings.access_log else None
    runner = web.AppRunner(app, access_log=access_log, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=1024, reuse_address=True)
    await site.start()
    port = runner.addresses[0][1]
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{host}:{port}"
    resolver = app[BACKEND].resolver
    resolver.local_netlocs |= {f"{host}:{port}", f"127.0.0.1:{port}", f"localhost:{port}"}
    if settings.public_url:
        resolver.local_netlocs.add(settings.public_url.split("://", 1)[-1].split("/", 1)[0])
    admin = "on" if settings.admin_token else "off"
    print(
        f"local-openeo listening on {url} (openEO API {url}{API_PREFIX}/, UDP catalogue {url}/udp/, admin {admin})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("local_openeo").info("udp catalogue folder: %s", settings.udp_dir)
    try:
        event_loop.run(serve(settings))
    except OSError as exc:
        print(f"local-openeo: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
