"""The gateway's HTTP error answers over a real HTTP server: an unexpected error inside a route is answered 500
with the APEx envelope whose request_id is the request's correlation id (also echoed as X-Correlation-ID)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests
import uvicorn
from fastapi import FastAPI

from gateway.http_errors import install_error_handlers
from gateway.middleware import RequestContextMiddleware
from tests.infra import free_port


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=1000)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @app.post("/echo")
    async def echo(body: dict) -> dict:
        return body

    port = free_port()
    http = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=http.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not http.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    http.should_exit = True
    thread.join(timeout=10)


def test_unexpected_error_answers_500_with_the_request_id(server: str) -> None:
    reply = requests.get(f"{server}/boom", headers={"X-Correlation-ID": "trace-42"}, timeout=10)
    assert reply.status_code == 500
    body = reply.json()
    assert body["status"] == "error" and body["error_code"] == "INTERNAL_ERROR"
    assert body["request_id"] == "trace-42" == reply.headers["X-Correlation-ID"]
    assert "a bug" not in reply.text  # no internals leak
    generated = requests.get(f"{server}/boom", timeout=10)
    assert generated.status_code == 500 and generated.json()["request_id"] == generated.headers["X-Correlation-ID"]
    assert generated.json()["request_id"]


def test_body_over_the_limit_answers_413_with_the_request_id(server: str) -> None:
    reply = requests.post(f"{server}/echo", json={"x": "y" * 2000}, headers={"X-Correlation-ID": "big-1"}, timeout=10)
    assert reply.status_code == 413
    assert reply.json()["request_id"] == "big-1" == reply.headers["X-Correlation-ID"]
    assert "HTTP_MAX_BODY_BYTES=1000" in reply.json()["message"]
    assert requests.post(f"{server}/echo", json={"x": 1}, timeout=10).json() == {"x": 1}
