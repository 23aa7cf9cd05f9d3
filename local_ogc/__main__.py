"""``python -m local_ogc``: run the local OGC API - Processes server (pygeoapi) and print its URL."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any


def build_config(url: str, workdir: Path, run_seconds: float) -> dict[str, Any]:
    """The pygeoapi configuration: no collections, the `geometry-statistics` process, TinyDB jobs in `workdir`."""
    return {
        "server": {
            "bind": {"host": "127.0.0.1", "port": 0},
            "url": url,
            "mimetype": "application/json; charset=UTF-8",
            "encoding": "utf-8",
            "language": "en-US",
            "cors": False,
            "pretty_print": False,
            "limits": {"default_items": 100, "max_items": 1000},
            "map": {"url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png", "attribution": "OpenStreetMap"},
            "manager": {"name": "local_ogc.manager.LocalManager", "connection": str(workdir / "jobs.db"),
                        "output_dir": str(workdir / "outputs")},
        },
        "logging": {"level": "WARNING"},
        "metadata": {
            "identification": {"title": "local OGC API - Processes", "description": "development backend",
                               "keywords": ["processes"], "keywords_type": "theme", "terms_of_service": "",
                               "url": url},
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
            "provider": {"name": "upscaling service", "url": url},
            "contact": {"name": "upscaling service", "position": "", "address": "", "city": "",
                        "stateorprovince": "", "postalcode": "", "country": "", "phone": "", "fax": "",
                        "email": "", "url": url, "hours": "", "instructions": "", "role": "pointOfContact"},
        },
        "resources": {
            "geometry-statistics": {
                "type": "process",
                "processor": {"name": "local_ogc.geometry_statistics.GeometryStatisticsProcessor",
                              "run_seconds": run_seconds},
            },
        },
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local_ogc", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("LOCAL_OGC_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("LOCAL_OGC_PORT", "8082")),
                        help="0: any free port")
    parser.add_argument("--run-seconds", type=float, default=float(os.environ.get("LOCAL_OGC_RUN_SECONDS", "2")),
                        help="how long each geometry-statistics job runs")
    parser.add_argument("--public-url", default=os.environ.get("LOCAL_OGC_PUBLIC_URL", ""),
                        help="the URL clients use, when not http://<host>:<port>")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(f"local-ogc: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    sock.listen(128)
    port = sock.getsockname()[1]
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    url = (args.public_url or f"http://{host}:{port}").rstrip("/")
    with tempfile.TemporaryDirectory(prefix="local-ogc-") as tmp:
        workdir = Path(tmp)
        (workdir / "outputs").mkdir()
        config_path, openapi_path = workdir / "pygeoapi.yml", workdir / "openapi.yml"
        # JSON is YAML: pygeoapi reads it as its YAML configuration.
        config_path.write_text(json.dumps(build_config(url, workdir, args.run_seconds), indent=1))
        from pygeoapi.openapi import generate_openapi_document

        openapi_path.write_text(generate_openapi_document(config_path, "yaml"))
        os.environ["PYGEOAPI_CONFIG"], os.environ["PYGEOAPI_OPENAPI"] = str(config_path), str(openapi_path)
        from pygeoapi.flask_app import APP
        from werkzeug.serving import make_server

        server = make_server(args.host, port, APP, threaded=True, fd=sock.fileno())
        signal.signal(signal.SIGTERM, _interrupt)
        print(f"local-ogc listening on {url} (OGC API - Processes {url}/processes)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


if __name__ == "__main__":
    main()
