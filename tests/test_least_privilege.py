"""Least privilege (upscaling/accounts.py): every service runs under its own RabbitMQ user and PostgreSQL role, and
what it may not do is refused by the broker and the database themselves. The accounts are provisioned with the
machine's admin accounts (rabbitmqctl, or the management API at RABBITMQ_API_URL) under names of this run and
removed afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import grpc
import pytest
import requests
from aiormq.exceptions import ChannelAccessRefused
from cryptography.fernet import Fernet

from tests.infra import ServiceProcess, free_port, unique_name, wait_grpc_serving, with_database
from tests.support import LocalOpenEO, admin_sql, drop_private_resources, tiles
from upscaling import accounts, broker
from upscaling.backends import parse_backend
from upscaling.credentials import Cipher, CredentialStore
from upscaling.openeo_backend import user_tokens
from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc


@dataclass
class Provisioned:
    """A database, a broker prefix and the service accounts of this module."""

    admin_database_url: str
    admin_rabbitmq_url: str
    database_url: str
    prefix: str
    urls: dict[str, accounts.ServiceUrls]
    accounts: list[accounts.Account]


def _manager() -> accounts.UserManager:
    api = os.environ.get("RABBITMQ_API_URL", "")
    if not api and not shutil.which("rabbitmqctl"):
        pytest.skip("neither rabbitmqctl nor RABBITMQ_API_URL to manage RabbitMQ users")
    return accounts.user_manager(api)


@pytest.fixture(scope="module")
def provisioned(infra: Any) -> Iterator[Provisioned]:
    manager = _manager()
    db_name = unique_name("lp_test")
    prefix = unique_name("lp")
    service_accounts = accounts.accounts(f"lp{uuid.uuid4().hex[:10]}")
    asyncio.run(admin_sql(infra.admin_database_url, f'CREATE DATABASE "{db_name}"'))
    database_url = with_database(infra.admin_database_url, db_name)
    try:
        urls = asyncio.run(accounts.provision(database_url, infra.rabbitmq_url, prefix, manager, service_accounts))
        yield Provisioned(infra.admin_database_url, infra.rabbitmq_url, database_url, prefix, urls, service_accounts)
    finally:
        try:
            asyncio.run(accounts.remove(database_url, manager, [a.user for a in service_accounts]))
        finally:
            asyncio.run(drop_private_resources(infra.admin_database_url, db_name, infra.rabbitmq_url, prefix))


# --- the permission model itself ---

def test_only_dispatcher_and_monitor_may_publish() -> None:
    t = broker.Topology("p")
    for service in accounts.SERVICES:
        write = re.compile(accounts.rabbitmq_permissions(service, "p").write)
        publishes = {e for e in (t.jobs_exchange, t.events_exchange, t.dead_letter_exchange, "amq.default",
                                 "amq.topic") if write.search(e)}
        expected = {"gateway": set(), "monitor": {t.jobs_exchange, t.events_exchange},
                    "dispatcher": {t.jobs_exchange, t.events_exchange, t.dead_letter_exchange}}[service]
        assert publishes == expected, service


def test_permissions_stay_within_the_prefix() -> None:
    other = broker.Topology("p.x")  # a prefix that starts like ours
    names = [other.jobs_exchange, other.jobs_queue, other.dead_letter_exchange, other.dead_letter_queue,
             other.events_exchange, "pjobs", "p.jobs.submit2"]
    for service in accounts.SERVICES:
        perms = accounts.rabbitmq_permissions(service, "p")
        for regex in (perms.configure, perms.write, perms.read):
            assert regex == "" or not any(re.search(regex, n) for n in names), (service, regex)
    with pytest.raises(ValueError):
        accounts.rabbitmq_permissions("tiler", "p")


def test_service_url_carries_the_account() -> None:
    account = accounts.Account("gateway", "up_gateway", "p@ss/w:rd")
    url = accounts.service_url("postgresql://postgres@db.example:5433/upscaling?sslmode=require", account)
    assert url == "postgresql://up_gateway:p%40ss%2Fw%3Ard@db.example:5433/upscaling?sslmode=require"
    assert accounts.service_url("amqp://guest:guest@mq/", account).startswith("amqp://up_gateway:p%40ss")


# --- provisioned accounts against the real servers ---

async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        return {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    finally:
        await conn.close()


def test_every_table_is_granted_or_owner_only(provisioned: Provisioned) -> None:
    """A migration that adds a table must say in accounts.GRANTS who uses it (or list it as the owner's)."""
    granted = {table for grants in accounts.GRANTS.values() for table in grants}
    tables = asyncio.run(_tables(provisioned.database_url))
    assert tables - granted - set(accounts.OWNER_ONLY) == set()
    assert granted <= tables  # no grant names a table that does not exist


async def _refused_sql(url: str, *statements: str) -> list[str]:
    """Each statement's outcome as the given role: 'refused' (insufficient privilege) or 'allowed'."""
    conn = await asyncpg.connect(url)
    outcomes = []
    try:
        for statement in statements:
            try:
                async with conn.transaction():
                    await conn.execute(statement)
                    raise _Rollback
            except _Rollback:
                outcomes.append("allowed")
            except asyncpg.InsufficientPrivilegeError:
                outcomes.append("refused")
    finally:
        await conn.close()
    return outcomes


class _Rollback(Exception):
    """Undo an allowed statement."""


def test_database_refuses_what_a_role_may_not_do(provisioned: Provisioned) -> None:
    urls = provisioned.urls
    gateway = asyncio.run(_refused_sql(
        urls["gateway"].database_url,
        "UPDATE dispatcher_heartbeats SET seen_at = now()",
        "DELETE FROM schema_migrations",
        "DELETE FROM audit_log",  # the audit trail is append-only for the gateway
        "UPDATE audit_log SET outcome = 'ok'",
        "CREATE TABLE lp_probe (id int)",
        "TRUNCATE task_events",
        "INSERT INTO backend_state (backend) VALUES ('x')",
        "INSERT INTO audit_log (actor, action, resource, outcome) VALUES ('a', 'create', 'task', 'ok')",
    ))
    assert gateway == ["refused"] * 7 + ["allowed"]
    monitor = asyncio.run(_refused_sql(
        urls["monitor"].database_url,
        "UPDATE dispatcher_heartbeats SET seen_at = now()",
        "INSERT INTO audit_log (actor, action, resource, outcome) VALUES ('a', 'create', 'task', 'ok')",
        "DELETE FROM upscale_tasks",
        "DELETE FROM dispatcher_heartbeats",
    ))
    assert monitor == ["refused", "refused", "refused", "allowed"]
    dispatcher = asyncio.run(_refused_sql(
        urls["dispatcher"].database_url,
        "SELECT * FROM audit_log",
        "INSERT INTO upscale_tasks (title, label, service, dimension_name) VALUES ('t', 'l', '{}', 'd')",
        "UPDATE dispatcher_heartbeats SET seen_at = now()",
    ))
    assert dispatcher == ["refused", "refused", "allowed"]


async def _credentials_as_each_role(urls: dict[str, accounts.ServiceUrls], monkeypatch: pytest.MonkeyPatch
                                    ) -> list[str]:
    """Users' own backend credentials as each role uses them: the gateway stores, lists and deletes; the dispatcher
    and the monitor read and refresh (row lock + update). The identity provider's refresh grant is replaced by a
    stand-in here: only the database privileges are under test."""
    cipher = Cipher([Fernet.generate_key().decode()])
    backend = parse_backend({"endpoint": "http://lp/openeo/1.2",
                             "auth": {"method": "user_refresh_token", "client_id": "c", "provider_id": "egi"}})
    monkeypatch.setattr(user_tokens, "refresh", lambda b, token, timeout: user_tokens.Tokens(
        "access-token-new", time.time() + 3600, token + "-rotated"))
    seen = []
    pools = {s: await asyncpg.create_pool(urls[s].database_url, min_size=1, max_size=2)
             for s in ("gateway", "dispatcher", "monitor")}
    try:
        gateway = CredentialStore(pools["gateway"], cipher)
        await gateway.save_tokens("alice", backend, user_tokens.Tokens("access-token-1", time.time() + 3600,
                                                                       "refresh-token-1"))
        seen.append(",".join(r.endpoint for r in await gateway.registrations("alice")))
        for service in ("dispatcher", "monitor"):
            store = CredentialStore(pools[service], cipher)
            seen.append((await store.account(backend, "alice")).access_token)
            seen.append((await store.account(backend, "alice", force_refresh=True)).access_token)
            await pools[service].execute("UPDATE backend_credentials SET refreshed_at = NULL")
        seen.append(str(await gateway.delete("alice", backend)))
    finally:
        for pool in pools.values():
            await pool.close()
    return seen


def test_each_role_may_do_what_users_credentials_need(provisioned: Provisioned,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seen = asyncio.run(_credentials_as_each_role(provisioned.urls, monkeypatch))
    assert seen == ["http://lp/openeo/1.2", "access-token-1", "access-token-new", "access-token-new",
                    "access-token-new", "True"]
    refused = asyncio.run(_refused_sql(provisioned.urls["dispatcher"].database_url,
                                       "DELETE FROM backend_credentials",
                                       "INSERT INTO backend_credentials (owner, backend, method)"
                                       " VALUES ('a', 'b', 'c')"))
    assert refused == ["refused", "refused"]


@pytest.fixture
async def amqp(provisioned: Provisioned) -> AsyncIterator[dict[str, aio_pika.abc.AbstractConnection]]:
    connections: dict[str, aio_pika.abc.AbstractConnection] = {
        s: await aio_pika.connect(u.rabbitmq_url) for s, u in provisioned.urls.items()}
    yield connections
    for connection in connections.values():
        await connection.close()


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """A consumer that is never called (its registration is refused)."""


async def _refusal(action: Any) -> ChannelAccessRefused:
    with pytest.raises(ChannelAccessRefused) as refused:
        await action
    return refused.value


async def test_broker_refuses_what_a_user_may_not_do(provisioned: Provisioned,
                                                     amqp: dict[str, aio_pika.abc.AbstractConnection]) -> None:
    t = broker.Topology(provisioned.prefix)
    message = aio_pika.Message(b"forged", type="upscaling.v1.WatchTaskResponse")

    # the gateway publishing a (forged) status event: ACCESS_REFUSED (403) from the broker
    channel = await amqp["gateway"].channel(publisher_confirms=True)
    events = await channel.get_exchange(t.events_exchange)  # passive: needs no permission
    refused = await _refusal(events.publish(message, routing_key="task.1.job.1"))
    # (aiormq raises ChannelAccessRefused for the channel.close reply code 403 only)
    assert "ACCESS_REFUSED" in str(refused) and t.events_exchange in str(refused)
    for name in (t.jobs_exchange, t.dead_letter_exchange):  # nor a job message
        channel = await amqp["gateway"].channel(publisher_confirms=True)
        await _refusal((await channel.get_exchange(name)).publish(message, routing_key="submit"))
    channel = await amqp["gateway"].channel()  # nor may it reach the job queue
    await _refusal((await channel.get_queue(t.jobs_queue)).consume(_ignore))

    # the monitor may not consume the job queue, nor (re)declare it
    channel = await amqp["monitor"].channel()
    await _refusal((await channel.get_queue(t.jobs_queue)).consume(_ignore))
    channel = await amqp["monitor"].channel()
    await _refusal(channel.declare_queue(t.jobs_queue, durable=True, arguments={"x-queue-type": "quorum"}))

    # so the monitor declares just the exchanges it publishes to, the gateway looks them up (and may not publish),
    # an admin (all other tests) declares the whole topology
    for service in ("monitor", "gateway", "admin"):
        url = provisioned.admin_rabbitmq_url if service == "admin" else provisioned.urls[service].rabbitmq_url
        robust = await broker.connect(url, "least-privilege test")
        try:
            declared = await broker.declare_permitted(robust, t)
            assert isinstance(declared, broker.DeclaredTopology) is (service == "admin")
            assert declared.events_exchange.name == t.events_exchange
            if service == "gateway":
                await _refusal(declared.events_exchange.publish(message, routing_key="task.1"))
        finally:
            await robust.close()

    # the dispatcher may not go outside its prefix
    channel = await amqp["dispatcher"].channel()
    await _refusal(channel.declare_exchange(f"{provisioned.prefix}x.jobs", aio_pika.ExchangeType.DIRECT))

    # what they may do: the monitor publishes a status event, the gateway consumes it through its own queue
    channel = await amqp["gateway"].channel()
    events = await channel.declare_exchange(t.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(f"{t.gateway_queue_prefix}{uuid.uuid4().hex}", exclusive=True,
                                        auto_delete=True)
    await queue.bind(events, routing_key="task.#")
    publisher = await amqp["monitor"].channel(publisher_confirms=True)
    await (await publisher.get_exchange(t.events_exchange)).publish(aio_pika.Message(b"ok"), routing_key="task.7")
    async with queue.iterator() as messages:
        async for received in messages:
            assert received.body == b"ok"
            break


# --- the whole stack, every service under its own account ---

def _service_env(service_env: dict[str, str], provisioned: Provisioned, service: str) -> dict[str, str]:
    urls = provisioned.urls[service]
    return {**service_env, "DATABASE_URL": urls.database_url, "RABBITMQ_URL": urls.rabbitmq_url}


def test_stack_runs_a_task_with_one_account_per_service(provisioned: Provisioned, service_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    backend = LocalOpenEO("--queue-seconds", "0.1", "--run-seconds", "0.3")
    http_port, grpc_port = free_port(), free_port()
    env = {**service_env, "BROKER_PREFIX": provisioned.prefix, "MIGRATE_ON_START": "false",
           "OPENEO_BACKENDS": backend.backends_env(max_running_jobs=8), "UDP_ALLOWED_URLS": backend.udp_catalogue,
           "HEALTH_HOST": "127.0.0.1", "GATEWAY_HTTP_PORT": str(http_port), "GATEWAY_GRPC_PORT": str(grpc_port),
           "TILER_ADDRESS": f"127.0.0.1:{free_port()}", "DISPATCHER_HEALTH_PORT": str(free_port()),
           "MONITOR_HEALTH_PORT": str(free_port()), "MONITOR_INTERVAL_MIN_S": "0.2", "MONITOR_INTERVAL_MAX_S": "1",
           "OUTBOX_POLL_S": "0.5", "GRPC_GRACE_S": "3", "DB_POOL_MAX": "4"}
    processes = [ServiceProcess(s, m, _service_env(env, provisioned, s), tmp_path / f"{s}.log")
                 for s, m in (("dispatcher", "services.dispatcher"), ("monitor", "services.monitor"),
                              ("gateway", "gateway"))]
    try:
        for proc in processes:
            proc.start()
        wait_grpc_serving(f"127.0.0.1:{env['DISPATCHER_HEALTH_PORT']}", processes[0])
        wait_grpc_serving(f"127.0.0.1:{env['MONITOR_HEALTH_PORT']}", processes[1])
        wait_grpc_serving(f"127.0.0.1:{grpc_port}", processes[2])  # (its /health also wants a tiler: none here)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
            reply = stub.CreateTask(upscaling_pb2.CreateTaskRequest(
                title="least privilege", label="openeo",
                service=common_pb2.ServiceRef(endpoint=backend.endpoint, application=backend.application),
                parameters_json=json.dumps({"year": 2024}),
                dimension=upscaling_pb2.Dimension(name="spatial_extent",
                                                  values_json=[json.dumps(t) for t in tiles(4)])), timeout=60)
            task_id = reply.task.id
            events = list(stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id), timeout=120))
        logs = "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in processes)
        assert events and events[-1].HasField("task_event"), logs
        assert events[-1].task_event.status == common_pb2.TASK_STATUS_FINISHED, logs
        body = requests.get(f"http://127.0.0.1:{http_port}/upscale_tasks/{task_id}", timeout=10).json()
        assert body["status"] == "finished", logs
        for proc in processes:
            proc.assert_alive()
            assert "ACCESS_REFUSED" not in proc.log() and "permission denied" not in proc.log(), proc.log()[-3000:]
    finally:
        for proc in reversed(processes):
            proc.stop()
        backend.stop()


# --- provisioning through the management HTTP API (what compose and Kubernetes use) ---

@pytest.fixture(scope="module")
def managed_rabbitmq() -> Iterator[tuple[str, str]]:
    """(AMQP URL, management API URL) of a private RabbitMQ node with the management plugin (the machine's own
    node has none enabled, and stays untouched)."""
    if not shutil.which("rabbitmq-server"):
        pytest.skip("no rabbitmq-server to start a private node with the management plugin")
    from tests.chaos.servers import PrivateRabbitMQ, _chown

    node = PrivateRabbitMQ()
    api_port = free_port()
    (node.dir / "plugins").write_text("[rabbitmq_management].\n")
    with (node.dir / "rabbitmq.conf").open("a") as conf:
        conf.write(f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {api_port}\n")
    _chown(node.dir, "rabbitmq")
    try:
        node.start()
        deadline = time.monotonic() + 60
        while True:  # the plugin answers a few seconds after the AMQP port
            try:
                if requests.get(f"http://127.0.0.1:{api_port}/api/overview", auth=("guest", "guest"),
                                timeout=3).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the management API did not answer"
            time.sleep(0.3)
        yield node.url, f"http://guest:guest@127.0.0.1:{api_port}"
    finally:
        node.destroy()


async def _publish_as(url: str, exchange: str) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await (await channel.get_exchange(exchange)).publish(aio_pika.Message(b"x"), routing_key="task.1")
    finally:
        await connection.close()


def test_provisioning_through_the_management_api(infra: Any, managed_rabbitmq: tuple[str, str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    amqp_url, api_url = managed_rabbitmq
    db_name, prefix, user_prefix = unique_name("lp_api"), unique_name("lpapi"), f"lpapi{uuid.uuid4().hex[:8]}"
    asyncio.run(admin_sql(infra.admin_database_url, f'CREATE DATABASE "{db_name}"'))
    database_url = with_database(infra.admin_database_url, db_name)
    args = ["--database-url", database_url, "--rabbitmq-url", amqp_url, "--rabbitmq-api", api_url,
            "--prefix", prefix, "--user-prefix", user_prefix]
    try:
        assert accounts.main(args) == 0
        printed = dict(line.split("  #")[0].split("=", 1) for line in capsys.readouterr().out.splitlines())
        t = broker.Topology(prefix)
        asyncio.run(_publish_as(printed["MONITOR_RABBITMQ_URL"], t.events_exchange))  # allowed
        with pytest.raises(ChannelAccessRefused):
            asyncio.run(_publish_as(printed["GATEWAY_RABBITMQ_URL"], t.events_exchange))
        assert accounts.main(args) == 0  # again: idempotent (new generated passwords replace the old ones)
        again = dict(line.split("  #")[0].split("=", 1) for line in capsys.readouterr().out.splitlines())
        asyncio.run(_publish_as(again["DISPATCHER_RABBITMQ_URL"], t.jobs_exchange))
        assert accounts.main([*args, "--remove"]) == 0
        with pytest.raises(aio_pika.exceptions.AMQPConnectionError):  # the user is gone
            asyncio.run(_publish_as(again["DISPATCHER_RABBITMQ_URL"], t.jobs_exchange))
    finally:
        accounts.main([*args, "--remove"])
        asyncio.run(admin_sql(infra.admin_database_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
