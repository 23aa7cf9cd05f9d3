"""WebSockets with the APEx envelope `{"type","data","message","task_id"}`, fed by status events.

`/ws/upscale_tasks/{id}?interval=N&delta=false`: `init`, then a `status` snapshot (the `GET /upscale_tasks/{id}`
body plus its `sequence`) at once, then a fresh snapshot whenever events of the task arrive: the first change
after a quiet period at once, further ones batched so that at most one snapshot goes out per `interval` seconds
(interval only throttles); the snapshot of a terminal task is sent at once and the socket is then closed
normally. Snapshots come from the task's in-memory feed, one JSON text per task version shared by every socket.
With `delta=true`, every message after the first snapshot carries only what changed since the previous one:
`{id, status, updated, job_counts, progress, costs, usage, max_costs, stop_reason, sequence, delta: true, since,
jobs: [{id, status, progress, message}]}`.
`/ws/jobs_status?interval=N&filter=...`: the same envelope, data = the `/jobs_status` body, refreshed on
events (and every interval for standalone jobs, which have no events), sent when it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from gateway import workers
from gateway.auth import Principal
from gateway.auth_http import caller
from gateway.events_hub import EventsHub
from gateway.http_tasks import jobs_status_body, parse_filters
from gateway.tasks import TaskService
from gateway.ws_protocol import SHARED_TEXT
from upscaling.errors import InvalidArgument, ResourceExhausted, ServiceError, Unauthenticated
from upscaling.limits import SubscriptionCounter

log = logging.getLogger(__name__)
DEFAULT_INTERVAL_S = 10.0
MAX_INTERVAL_S = 86400.0  # beyond, timers overflow the event loop's select timeout


def envelope(kind: str, data: Any = None, message: str | None = None, task_id: int | None = None
             ) -> dict[str, Any]:
    """An APEx WebSocket message (every key present)."""
    return {"type": kind, "data": data, "message": message, "task_id": task_id}


def _flag(raw: str | None, name: str) -> bool:
    if raw is None or raw.lower() in ("", "false", "0", "no"):
        return False
    if raw.lower() in ("true", "1", "yes"):
        return True
    raise InvalidArgument(f"{name} must be true or false, got {raw[:40]!r}")


def _interval(raw: str | None) -> float:
    if raw is None or raw == "":
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0 or value > MAX_INTERVAL_S:
        raise InvalidArgument(f"interval must be a positive number of seconds up to {MAX_INTERVAL_S:g}, "
                              f"got {raw[:40]!r}")
    return value


async def _fail(websocket: WebSocket, exc: ServiceError, task_id: int | None) -> None:
    """An `error` message, then close: 1008 (policy violation) for an exceeded limit or missing credentials,
    1011 with the error code as reason otherwise (as APEx does)."""
    await websocket.send_json(envelope("error", None, exc.message, task_id))
    code = 1008 if isinstance(exc, ResourceExhausted | Unauthenticated) else 1011
    await websocket.close(code=code, reason=exc.error_code[:120])


async def _until_disconnect(websocket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return


async def _run_until_client_leaves(websocket: WebSocket, sender: Awaitable[None]) -> None:
    """Run `sender` until it finishes (then close normally) or the client disconnects."""
    send_task = asyncio.ensure_future(sender)
    recv_task = asyncio.ensure_future(_until_disconnect(websocket))
    try:
        await asyncio.wait({send_task, recv_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (send_task, recv_task):
            task.cancel()
        for task in (send_task, recv_task):
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task
    if send_task.done() and not send_task.cancelled() and send_task.exception() is None \
            and websocket.application_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await websocket.close(code=1000)


async def _send_text(websocket: WebSocket, text: str) -> None:
    """Send a text every socket of the task sends: as the frame bytes built once per worker when the connection
    allows it (`gateway.ws_protocol`), else the ASGI way."""
    shared = (websocket.scope.get("extensions") or {}).get(SHARED_TEXT)
    if shared is None or not await shared(text):
        await websocket.send_text(text)


def create_ws_router(get_tasks: Callable[[], TaskService], get_hub: Callable[[], EventsHub],
                     watches: SubscriptionCounter) -> APIRouter:
    """The WebSocket routes (the caller is authenticated by the AuthMiddleware at the handshake; each socket
    counts against the caller's MAX_WATCHES_PER_USER while it is open)."""
    router = APIRouter()

    @router.websocket("/ws/upscale_tasks/{task_id}")
    async def watch_task(websocket: WebSocket, task_id: str, interval: str | None = None,
                         delta: str | None = None) -> None:
        await websocket.accept(headers=[(workers.WORKER_HEADER.encode(), str(workers.current()).encode())])
        tid = int(task_id) if task_id.isascii() and task_id.isdigit() and len(task_id) < 19 else None
        with contextlib.ExitStack() as held:
            try:
                who = caller(websocket)
                period = _interval(interval)
                as_delta = _flag(delta, "delta")
                if tid is None:
                    raise ServiceError(f"upscale task {task_id} not found", error_code="TASK_NOT_FOUND")
                tasks, hub = get_tasks(), get_hub()
                await tasks.task_exists(tid, who)
                held.enter_context(watches.hold(who.user_id))
            except ServiceError as exc:
                await _fail(websocket, exc, tid)
                return
            await _watch_task(websocket, hub, tid, period, as_delta)

    async def _watch_task(websocket: WebSocket, hub: EventsHub, tid: int, period: float, as_delta: bool) -> None:
        await websocket.send_json(envelope("init", None, f"watching upscale task {tid}", tid))
        async with hub.watch(tid, "websocket") as feed:

            async def send_loop(terminal_sent: Callable[[], None]) -> None:
                # Every socket of the task sends the same text for the same version (built once by the feed); a
                # socket that was slow to send simply sends the latest version next: nothing queues up.
                sent, terminal = feed.last, feed.terminal  # (the feed may move on while a text is sent)
                await _send_text(websocket, feed.snapshot_text())
                if terminal:
                    return
                last_sent = -math.inf  # the first change after the initial snapshot goes out at once
                while not feed.closed:
                    await feed.wait(sent, socket=True)
                    while not feed.terminal:  # throttle to one message per interval; a terminal state goes at once
                        wait = last_sent + period - time.monotonic()
                        if wait <= 0:
                            break
                        await feed.wait_terminal(wait)  # (not woken by every event meanwhile)
                    if feed.last <= sent:
                        continue
                    since, sent, terminal = sent, feed.last, feed.terminal
                    await _send_text(websocket, feed.delta_text(since) if as_delta else feed.snapshot_text())
                    if terminal:
                        terminal_sent()  # the gRPC streams of the task may end now (TaskFeed.socket_turn)
                        return
                    last_sent = time.monotonic()

            with feed.socket_turn() as terminal_sent:
                await _run_until_client_leaves(websocket, send_loop(terminal_sent))

    @router.websocket("/ws/jobs_status")
    async def watch_jobs_status(websocket: WebSocket, interval: str | None = None) -> None:
        await websocket.accept()
        filters = websocket.query_params.getlist("filter")
        with contextlib.ExitStack() as held:
            try:
                who = caller(websocket)
                period = _interval(interval)
                parse_filters(filters)
                tasks, hub = get_tasks(), get_hub()
                held.enter_context(watches.hold(who.user_id))
            except ServiceError as exc:
                await _fail(websocket, exc, None)
                return
            await _watch_jobs_status(websocket, tasks, hub, filters, who, period)

    async def _watch_jobs_status(websocket: WebSocket, tasks: TaskService, hub: EventsHub, filters: list[str],
                                 who: Principal, period: float) -> None:
        await websocket.send_json(envelope("init", None, "watching jobs status"))
        # Events of every task only wake this loop up; what is sent is the caller's own /jobs_status body.
        async with hub.watch_all("websocket") as wait_event:

            async def send_loop() -> None:
                previous: Any = None
                while True:
                    body = await jobs_status_body(tasks, filters, who)
                    if body != previous:
                        await websocket.send_json(envelope("status", body, "jobs status"))
                        previous = body
                    sent_at = time.monotonic()
                    await wait_event(period)
                    await asyncio.sleep(max(0.0, sent_at + period - time.monotonic()))

            await _run_until_client_leaves(websocket, send_loop())

    return router
