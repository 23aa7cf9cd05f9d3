"""The gateway's connections to its dependencies (PostgreSQL, RabbitMQ, tiler) and their health."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aio_pika.abc import AbstractRobustConnection

from gateway.auth import Authenticator, AuthSettings, Principal, create_authenticator, load_auth_settings
from gateway.backend_credentials import BackendCredentials, check_auth_mode
from gateway.egress import EgressFetcher, policy_from_settings
from gateway.events_hub import EventsHub
from gateway.sync_jobs import SyncJobs, SyncLimits, load_sync_limits
from gateway.tasks import TaskService
from gateway.tiler_client import TilerClient
from gateway.udp import UdpCache
from upscaling import broker, db, metrics
from upscaling.backends import load_backends
from upscaling.config import Settings
from upscaling.credentials import CredentialStore, load_cipher
from upscaling.errors import FailedPrecondition, Unavailable
from upscaling.limits import Limits, RateLimiter, SubscriptionCounter, load_limits
from upscaling.migrations import apply_migrations
from upscaling.startup import with_retry

log = logging.getLogger(__name__)
_GATEWAY = Principal("gateway", admin=True)  # the feeds read tasks for every watcher, each checked on its own


@dataclass
class Dependencies:
    """Everything the gateway talks to; opened by `start`, closed by `stop`."""

    settings: Settings
    pool: asyncpg.Pool | None = None
    amqp: AbstractRobustConnection | None = None
    tiler: TilerClient | None = None
    topology: broker.Topology = field(default_factory=broker.Topology)
    udps: UdpCache | None = None
    hub: EventsHub | None = None
    tasks: TaskService | None = None
    sync: SyncJobs | None = None
    cluster_state: metrics.ClusterState | None = None
    auth: AuthSettings = field(default_factory=load_auth_settings)
    limits: Limits = field(default_factory=load_limits)
    sync_limits: SyncLimits = field(default_factory=load_sync_limits)

    def __post_init__(self) -> None:
        self.authenticator: Authenticator = create_authenticator(self.auth)
        # Users' own backend credentials need their encryption key (and token exchange needs OIDC sign-in).
        try:
            backends = load_backends()
            self.cipher = load_cipher(backends)
            check_auth_mode(backends, self.auth.mode)
        except ValueError as exc:
            raise SystemExit(f"gateway cannot start: {exc}") from None
        self.credentials: BackendCredentials | None = None
        # One request bucket per user, shared by HTTP, WebSocket handshakes and gRPC calls.
        self.rate = RateLimiter("MAX_REQUESTS_PER_S_PER_USER", self.limits.requests_per_s_per_user,
                                self.limits.requests_burst_per_user)
        # Open watches (WatchTask streams and WebSockets) per user.
        self.watches = SubscriptionCounter(self.limits.max_watches_per_user)

    def backend_credentials(self) -> BackendCredentials:
        """Users' own backend credentials, or FailedPrecondition when no backend uses them."""
        if self.credentials is None:
            if self.tasks is None:
                raise Unavailable("the gateway is still starting")
            raise FailedPrecondition("no backend of this service uses users' own credentials "
                                     "(auth.method user_refresh_token or user_token_exchange)")
        return self.credentials

    def task_service(self) -> TaskService:
        """The task service, or Unavailable before the dependencies are up."""
        if self.tasks is None:
            raise Unavailable("the gateway is still starting")
        return self.tasks

    def sync_jobs(self) -> SyncJobs:
        """The synchronous jobs, or Unavailable before the dependencies are up."""
        if self.sync is None:
            raise Unavailable("the gateway is still starting")
        return self.sync

    def events_hub(self) -> EventsHub:
        """The events fan-out, or Unavailable before the dependencies are up."""
        if self.hub is None:
            raise Unavailable("the gateway is still starting")
        return self.hub

    async def _load_task(self, task_id: int) -> tuple[Any, list[Any]]:
        """A task row and its job rows, whoever owns it (for the in-memory feed; watchers are checked first)."""
        view = await self.task_service().get_task(task_id, _GATEWAY)
        return view.task, view.jobs

    async def start(self) -> None:
        """Connect (waiting for each dependency), apply migrations if configured, declare the topology, start
        the events subscription (the outbox relays run in the dispatchers and monitors)."""
        s = self.settings
        backends = load_backends()
        self.topology = broker.Topology(prefix=s.broker_prefix)
        self.pool = await with_retry("PostgreSQL", lambda: db.create_pool(s))
        if s.migrate_on_start:
            async with self.pool.acquire() as conn:
                await apply_migrations(conn)
        self.amqp = await with_retry("RabbitMQ", lambda: broker.connect(s.rabbitmq_url, "gateway"))
        # The gateway publishes nothing (its messages go through the outbox): it only needs the exchanges to
        # exist for its events queues; its broker user decides what it may declare (least privilege).
        await broker.declare_permitted(self.amqp, self.topology)
        self.tiler = TilerClient(s)
        self.udps = UdpCache(EgressFetcher(policy_from_settings(s), s.udp_fetch_timeout_s), ttl_s=s.udp_cache_ttl_s)
        self.tasks = TaskService(self.pool, backends, self.udps, s.max_dimension_values,
                                 max_in_flight_per_user=self.limits.max_tasks_in_flight_per_user)
        self.sync = SyncJobs(self.tasks, self.sync_limits)
        if self.cipher is not None:
            self.credentials = BackendCredentials(CredentialStore(self.pool, self.cipher, s.openeo_timeout_s),
                                                  backends, s.openeo_timeout_s, self.tasks.audit)
            self.tasks.credentials = self.credentials
        self.hub = EventsHub(self.amqp, self.topology, self.pool, self._load_task)
        await self.hub.start()
        self.cluster_state = metrics.ClusterState(self.pool, self.amqp, self.topology)
        log.info("authentication", extra={"auth_mode": self.auth.mode})

    async def stop(self) -> None:
        """Close every connection."""
        await self.authenticator.close()
        if self.sync:
            self.sync.close()
        if self.cluster_state:
            await self.cluster_state.close()
        if self.hub:
            await self.hub.stop()
        if self.tiler:
            await self.tiler.close()
        if self.amqp:
            await self.amqp.close()
        if self.pool:
            await self.pool.close()

    async def _check_rabbitmq(self) -> None:
        if self.amqp is None or self.amqp.is_closed:
            raise RuntimeError("connection closed")
        channel = await self.amqp.channel()
        try:
            await channel.declare_exchange(self.topology.events_exchange, passive=True)
        finally:
            await channel.close()

    async def health(self) -> dict[str, Any]:
        """`{"status": "ok"|"error", "<dependency>": {"status", "message"?}}`, checks run concurrently."""
        checks = {
            "database": lambda: db.check(self.pool) if self.pool else _fail("not connected"),
            "rabbitmq": self._check_rabbitmq,
            "tiler": lambda: self.tiler.check() if self.tiler else _fail("not connected"),
        }

        async def run(check: Any) -> dict[str, str]:
            try:
                await asyncio.wait_for(check(), timeout=5)
                return {"status": "ok"}
            except Exception as exc:
                return {"status": "error", "message": str(exc) or type(exc).__name__}

        results = await asyncio.gather(*(run(c) for c in checks.values()))
        body: dict[str, Any] = dict(zip(checks, results, strict=True))
        body = {"status": "ok" if all(r["status"] == "ok" for r in results) else "error", **body}
        return body


async def _fail(message: str) -> None:
    raise RuntimeError(message)
