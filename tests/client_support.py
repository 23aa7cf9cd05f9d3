"""A whole stack for the client, CLI and notebook tests (one per test module, so its processes and database
connections do not outlive the module): a gateway (restartable on the same ports), dispatcher
and monitor on a private database and broker prefix, the session's tiler, and a local openEO backend."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.infra import ROOT, ServiceProcess, free_port, unique_name, wait_grpc_serving, wait_http_ok, with_database
from tests.support import LocalOpenEO, admin_sql, drop_private_resources
from upscaling.migrations import migrate

UPSCALE = str(Path(sys.executable).with_name("upscale"))
# Four 5x5 km tiles on both sides of the UTM zone 31/32 border (6°E), in Belgium/Luxembourg.
AOI = {"type": "Polygon", "coordinates": [[[5.97, 49.80], [6.04, 49.80], [6.04, 49.84], [5.97, 49.84],
                                           [5.97, 49.80]]]}


def assert_mosaic_matches(mosaic_path: Path, tiles: list[Path], step: int = 2) -> int:
    """Every `step`-th pixel of the mosaic inside a tile holds the value of that tile's pixel under its centre
    (where tiles overlap, the later one in `tiles`; within a pixel of a tile's edge either neighbour may win, so
    those are not compared); the mosaic's bounds cover every tile. Returns the number of pixels compared."""
    import numpy as np
    import rasterio
    from shapely.geometry import box

    compared = 0
    with rasterio.open(mosaic_path) as mosaic:
        data = mosaic.read()
        opened = [rasterio.open(p) for p in tiles]
        try:
            cover = box(*mosaic.bounds).buffer(1e-9)
            assert all(cover.contains(box(*t.bounds)) for t in opened), (mosaic.bounds, [t.bounds for t in opened])
            arrays = [t.read() for t in opened]
            rows, cols = np.mgrid[0:mosaic.height:step, 0:mosaic.width:step]
            for r, c in zip(rows.ravel(), cols.ravel(), strict=True):
                x, y = mosaic.xy(r, c)
                for tile, array in zip(reversed(opened), reversed(arrays), strict=True):
                    left, bottom, right, top = tile.bounds
                    if not (left < x < right and bottom < y < top):
                        continue
                    margin_x = max(tile.res[0], mosaic.res[0])
                    margin_y = max(tile.res[1], mosaic.res[1])
                    fc, fr = ~tile.transform @ (x, y)
                    near_edge = not (left + margin_x < x < right - margin_x and bottom + margin_y < y < top - margin_y)
                    if not near_edge and min(abs(fr - round(fr)), abs(fc - round(fc))) > 1e-6:
                        tr, tc = tile.index(x, y)
                        assert (data[:, r, c] == array[:, tr, tc]).all(), (tile.name, r, c, tr, tc)
                        compared += 1
                    break  # the topmost tile decides (on its edge or a source pixel edge: either neighbour)
        finally:
            for tile in opened:
                tile.close()
    return compared


@dataclass
class ClientStack:
    gateway: ServiceProcess
    grpc: str
    http: str
    backend: LocalOpenEO
    env: dict[str, str]

    @property
    def udp(self) -> str:
        return self.backend.application

    def restart_gateway(self) -> None:
        """Stop the gateway (SIGTERM) and start it again on the same ports."""
        self.gateway.stop()
        self.gateway.start()
        wait_http_ok(f"{self.http}/health", self.gateway)
        wait_grpc_serving(self.grpc, self.gateway)

    def cli_env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "UPSCALE_ADDRESS": self.grpc, "UPSCALE_BACKEND": self.backend.endpoint,
                "PYTHONPATH": str(ROOT), "COLUMNS": "200", **extra}

    def aoi_file(self, folder: Path) -> Path:
        path = folder / "aoi.geojson"
        path.write_text(json.dumps(AOI))
        return path


@pytest.fixture(scope="module")
def client_stack(stack: Any, infra: Any, service_env: dict[str, str],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClientStack]:
    logs = tmp_path_factory.mktemp("client_stack")
    backend = LocalOpenEO("--queue-seconds", "0.1", "--run-seconds", "0.3")
    db_name, prefix = unique_name("client_test"), unique_name("client")
    asyncio.run(admin_sql(infra.admin_database_url, f'CREATE DATABASE "{db_name}"'))
    database_url = with_database(infra.admin_database_url, db_name)
    asyncio.run(migrate(database_url))
    http_port, grpc_port = free_port(), free_port()
    env = {**service_env, "DATABASE_URL": database_url, "BROKER_PREFIX": prefix, "MIGRATE_ON_START": "false",
           "OPENEO_BACKENDS": backend.backends_env(max_running_jobs=20), "TILER_ADDRESS": stack.tiler_address,
           "UDP_ALLOWED_URLS": backend.udp_catalogue,
           "GATEWAY_HTTP_PORT": str(http_port), "GATEWAY_GRPC_PORT": str(grpc_port), "HEALTH_HOST": "127.0.0.1",
           "DISPATCHER_HEALTH_PORT": str(free_port()), "MONITOR_HEALTH_PORT": str(free_port()),
           "MONITOR_INTERVAL_MIN_S": "0.2", "MONITOR_INTERVAL_MAX_S": "1", "OUTBOX_POLL_S": "0.5",
           "SUBMIT_BACKOFF_BASE_S": "0.05", "SUBMIT_BACKOFF_MAX_S": "0.5", "GRPC_GRACE_S": "3",
           "DB_POOL_MAX": "4"}
    gateway = ServiceProcess("client-gateway", "gateway", env, logs / "gateway.log")
    workers = [ServiceProcess("client-dispatcher", "services.dispatcher", env, logs / "dispatcher.log"),
               ServiceProcess("client-monitor", "services.monitor", env, logs / "monitor.log")]
    try:
        gateway.start()
        for worker in workers:
            worker.start()
        wait_http_ok(f"http://127.0.0.1:{http_port}/health", gateway)
        wait_grpc_serving(f"127.0.0.1:{grpc_port}", gateway)
        yield ClientStack(gateway, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}", backend, env)
    finally:
        for proc in [*workers, gateway]:
            proc.stop()
        backend.stop()
        asyncio.run(drop_private_resources(infra.admin_database_url, db_name, infra.rabbitmq_url, prefix))
