"""Least-privilege accounts: one RabbitMQ user and one PostgreSQL role per service, and the tool that provisions them
with the admin credentials (`python -m upscaling.accounts`, `upscaling accounts` in the container image).

Who may do what is decided here and nowhere else:
- RabbitMQ: configure/write/read permission regexes per service, limited to the names of its `BROKER_PREFIX`
  (upscaling/broker.py Topology). Only the dispatcher and the monitor may publish (job messages and status events);
  the gateway may only declare the events exchange and its own exclusive events queues (`<prefix>.gateway.<uuid>`),
  bind them and consume them. The monitor reads no queue (it only counts messages, which needs no permission).
- PostgreSQL: per service, the privileges on each table it uses (GRANTS below). Migrations run as the owner (the
  admin URL), never as a service role; a table that is in no service's GRANTS is the owner's alone.
The tiler uses neither the broker nor the database, so it has no account.

Provisioning is idempotent: it applies pending migrations, declares the broker topology, creates or updates each
user/role (password, permissions, grants; privileges no longer listed are revoked). RabbitMQ users are managed
with `rabbitmqctl` on the broker's own machine, or with the management HTTP API (`--rabbitmq-api`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import secrets
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import asyncpg

from upscaling import broker
from upscaling.migrations import migrate

# Services with an account (the tiler uses neither the broker nor the database).
SERVICES = ("gateway", "dispatcher", "monitor")

# Table privileges of each service's PostgreSQL role (from the SQL each service runs).
GRANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "gateway": {
        # creates tasks and jobs, cancels and retries them (row locks: UPDATE); writes their job messages and
        # events into the outbox / event log that the dispatcher and monitor relay; appends audit entries
        "upscale_tasks": ("SELECT", "INSERT", "UPDATE"),
        "unit_jobs": ("SELECT", "INSERT", "UPDATE"),
        "outbox": ("SELECT", "INSERT"),
        "task_events": ("SELECT", "INSERT"),
        "audit_log": ("SELECT", "INSERT"),
        # a failed job's error log entries (`GET /unit_jobs/{id}/logs`)
        "job_logs": ("SELECT",),
        # users' own backend credentials: stored by a token exchange or a registration, listed, deleted
        "backend_credentials": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    },
    "dispatcher": {
        "upscale_tasks": ("SELECT", "UPDATE"),
        "unit_jobs": ("SELECT", "UPDATE"),
        "outbox": ("SELECT", "INSERT", "UPDATE"),
        "task_events": ("SELECT", "INSERT"),
        "backend_state": ("SELECT", "INSERT", "UPDATE"),
        "job_delivery_state": ("SELECT", "INSERT", "UPDATE", "DELETE"),
        "dead_letters": ("SELECT", "INSERT"),
        "dispatcher_heartbeats": ("SELECT", "INSERT", "UPDATE", "DELETE"),
        # submits with the job owner's backend credentials, refreshing them before they expire
        "backend_credentials": ("SELECT", "UPDATE"),
    },
    "monitor": {
        "upscale_tasks": ("SELECT", "UPDATE"),
        "unit_jobs": ("SELECT", "UPDATE"),
        "outbox": ("SELECT", "INSERT", "UPDATE"),
        "task_events": ("SELECT", "INSERT"),
        # the reconciler reads which jobs dispatchers hold and forgets dispatchers gone for an hour
        "dispatcher_heartbeats": ("SELECT", "DELETE"),
        # the error log entries of failed jobs, fetched once per failure
        "job_logs": ("SELECT", "INSERT"),
        # polls, cancels and reads results with the job owner's backend credentials, refreshing them
        "backend_credentials": ("SELECT", "UPDATE"),
    },
}

# Tables only the owner touches (checked by the tests: every table of the schema is in GRANTS or here).
OWNER_ONLY = ("schema_migrations",)

# Environment variable of each service's password (generated when unset).
PASSWORD_ENV = {service: f"{service.upper()}_ACCOUNT_PASSWORD" for service in SERVICES}
# Environment variables the provisioning tool reads besides upscaling.config's.
TOOL_ENV = frozenset({*PASSWORD_ENV.values(), "RABBITMQ_API_URL", "RABBITMQ_NODE", "ACCOUNT_PREFIX"})


@dataclass(frozen=True)
class Permissions:
    """RabbitMQ configure / write / read regexes of one user ("" = nothing)."""

    configure: str
    write: str
    read: str


def rabbitmq_permissions(service: str, prefix: str) -> Permissions:
    """The permission regexes of `service`'s RabbitMQ user for the topology of `prefix`."""
    t = broker.Topology(prefix)

    def names(*names: str) -> str:
        return "^(" + "|".join(re.escape(n) for n in names) + ")$"

    own_queues = re.escape(t.gateway_queue_prefix) + "[0-9a-f]{32}"  # each gateway process's events queue
    if service == "dispatcher":  # declares the whole topology; consumes the job and dead-letter queues
        every = names(t.jobs_exchange, t.jobs_queue, t.dead_letter_exchange, t.dead_letter_queue, t.events_exchange)
        return Permissions(configure=every, write=every,
                           read=names(t.jobs_exchange, t.jobs_queue, t.dead_letter_exchange, t.dead_letter_queue))
    if service == "monitor":  # publishes status events and republishes stranded job messages; consumes nothing
        exchanges = names(t.jobs_exchange, t.events_exchange)
        return Permissions(configure=exchanges, write=exchanges, read="")
    if service == "gateway":  # consumes status events through its own queue; publishes nothing
        return Permissions(configure=f"^({re.escape(t.events_exchange)}|{own_queues})$", write=f"^{own_queues}$",
                           read=f"^({re.escape(t.events_exchange)}|{own_queues})$")
    raise ValueError(f"no RabbitMQ account for service {service!r}")


@dataclass(frozen=True)
class Account:
    """A service's user name (the same in RabbitMQ and PostgreSQL) and password."""

    service: str
    user: str
    password: str


def accounts(user_prefix: str, passwords: Mapping[str, str] | None = None,
             services: Iterable[str] = SERVICES) -> list[Account]:
    """One account per service, named `<user_prefix>_<service>`, with the given or a generated password."""
    given = passwords or {}
    return [Account(s, f"{user_prefix}_{s}", given.get(s) or secrets.token_urlsafe(24)) for s in services]


def service_url(url: str, account: Account) -> str:
    """`url` (a PostgreSQL or AMQP URL) with the account's user and password instead of the admin's."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{urllib.parse.quote(account.user, safe='')}:{urllib.parse.quote(account.password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def grant_statements(service: str, role: str, database: str) -> list[str]:
    """The SQL that gives `role` exactly the privileges of `service` (every earlier privilege revoked first)."""
    r = _ident(role)
    statements = [f"GRANT CONNECT ON DATABASE {_ident(database)} TO {r}", f"GRANT USAGE ON SCHEMA public TO {r}",
                  f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {r}",
                  f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {r}"]
    for table, privileges in GRANTS[service].items():
        statements.append(f"GRANT {', '.join(privileges)} ON TABLE public.{_ident(table)} TO {r}")
    return statements


async def _sequences_of(conn: asyncpg.Connection, table: str) -> list[str]:
    """The sequences owned by a table's columns (bigserial ids)."""
    rows = await conn.fetch(
        """SELECT s.relname FROM pg_class s JOIN pg_depend d ON d.objid = s.oid AND d.deptype = 'a'
           JOIN pg_class t ON t.oid = d.refobjid WHERE s.relkind = 'S' AND t.relname = $1""", table)
    return [r["relname"] for r in rows]


async def provision_postgres(admin_url: str, accounts: Iterable[Account]) -> None:
    """Apply pending migrations as the owner, then create or update each service role and its grants."""
    await migrate(admin_url)
    conn = await asyncpg.connect(admin_url)
    try:
        database = await conn.fetchval("SELECT current_database()")
        for account in accounts:
            role, password = _ident(account.user), _literal(account.password)
            async with conn.transaction():
                exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", account.user)
                verb = "ALTER" if exists else "CREATE"
                await conn.execute(f"{verb} ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT "
                                   f"PASSWORD {password}")
                for statement in grant_statements(account.service, account.user, database):
                    await conn.execute(statement)
                for table, privileges in GRANTS[account.service].items():
                    if "INSERT" in privileges:  # bigserial ids: nextval() of the table's sequence
                        for sequence in await _sequences_of(conn, table):
                            await conn.execute(f"GRANT USAGE ON SEQUENCE public.{_ident(sequence)} TO {role}")
    finally:
        await conn.close()


async def drop_postgres(admin_url: str, users: Iterable[str]) -> None:
    """Remove service roles (their privileges in the admin URL's database and on shared objects first)."""
    conn = await asyncpg.connect(admin_url)
    try:
        for user in users:
            if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user):
                await conn.execute(f"DROP OWNED BY {_ident(user)}")
                await conn.execute(f"DROP ROLE {_ident(user)}")
    finally:
        await conn.close()


def _vhost(amqp_url: str) -> str:
    path = urllib.parse.urlsplit(amqp_url).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


class RabbitmqCtl:
    """Users managed with `rabbitmqctl` on the broker's machine (needs the node's Erlang cookie: root or the
    rabbitmq user)."""

    def __init__(self, command: str = "rabbitmqctl", node: str | None = None) -> None:
        self.base = [command, *(["-n", node] if node else [])]

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result

    def put_user(self, user: str, password: str, vhost: str, permissions: Permissions) -> None:
        if self._run("add_user", "--", user, password, check=False).returncode != 0:
            self._run("change_password", "--", user, password)
        self._run("set_user_tags", user)  # no management or administrator tag
        self._run("set_permissions", "-p", vhost, "--", user, permissions.configure, permissions.write,
                  permissions.read)

    def delete_user(self, user: str) -> None:
        self._run("delete_user", "--", user, check=False)


class RabbitmqApi:
    """Users managed through the management plugin's HTTP API (`http://admin:password@host:15672`)."""

    def __init__(self, api_url: str) -> None:
        parts = urllib.parse.urlsplit(api_url)
        netloc = parts.netloc.rpartition("@")[2]  # without the credentials (sent as a header)
        self.base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/api", "", ""))
        credentials = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
        self.auth = "Basic " + base64.b64encode(credentials.encode()).decode()

    def _call(self, method: str, path: str, body: object | None = None, missing_ok: bool = False) -> None:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Authorization": self.auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30):
                pass
        except urllib.error.HTTPError as exc:
            if not (missing_ok and exc.code == 404):
                raise RuntimeError(f"RabbitMQ API {method} {path}: HTTP {exc.code} {exc.read()[:200]!r}") from exc

    def put_user(self, user: str, password: str, vhost: str, permissions: Permissions) -> None:
        quoted_user, quoted_vhost = urllib.parse.quote(user, safe=""), urllib.parse.quote(vhost, safe="")
        self._call("PUT", f"/users/{quoted_user}", {"password": password, "tags": ""})
        self._call("PUT", f"/permissions/{quoted_vhost}/{quoted_user}",
                   {"configure": permissions.configure, "write": permissions.write, "read": permissions.read})

    def delete_user(self, user: str) -> None:
        self._call("DELETE", f"/users/{urllib.parse.quote(user, safe='')}", missing_ok=True)


UserManager = RabbitmqCtl | RabbitmqApi


async def declare_topology(admin_amqp_url: str, prefix: str) -> None:
    """Declare the exchanges and queues as the admin, so they exist before any service starts (the gateway and
    the monitor may not declare the job queues)."""
    connection = await broker.connect(admin_amqp_url, "accounts")
    try:
        await broker.declare(await connection.channel(), broker.Topology(prefix))
    finally:
        await connection.close()


def provision_rabbitmq(manager: UserManager, amqp_url: str, prefix: str, accounts: Iterable[Account]) -> None:
    """Create or update each service user with its permissions on the vhost of `amqp_url`."""
    vhost = _vhost(amqp_url)
    for account in accounts:
        manager.put_user(account.user, account.password, vhost, rabbitmq_permissions(account.service, prefix))


@dataclass(frozen=True)
class ServiceUrls:
    """The DATABASE_URL and RABBITMQ_URL a service runs with."""

    database_url: str
    rabbitmq_url: str


async def provision(admin_database_url: str, admin_amqp_url: str, prefix: str, manager: UserManager,
                    service_accounts: list[Account]) -> dict[str, ServiceUrls]:
    """Everything: migrations, topology, RabbitMQ users, PostgreSQL roles; returns each service's URLs."""
    await provision_postgres(admin_database_url, service_accounts)
    await declare_topology(admin_amqp_url, prefix)
    await asyncio.to_thread(provision_rabbitmq, manager, admin_amqp_url, prefix, service_accounts)
    return {a.service: ServiceUrls(service_url(admin_database_url, a), service_url(admin_amqp_url, a))
            for a in service_accounts}


async def remove(admin_database_url: str, manager: UserManager, users: Iterable[str]) -> None:
    """Delete the given users and roles (tests clean up their own)."""
    names = list(users)
    await asyncio.to_thread(lambda: [manager.delete_user(u) for u in names])
    await drop_postgres(admin_database_url, names)


def user_manager(api_url: str = "", node: str = "") -> UserManager:
    """The management HTTP API when its URL is given, else the local `rabbitmqctl`."""
    return RabbitmqApi(api_url) if api_url else RabbitmqCtl(node=node or None)


def main(argv: list[str] | None = None) -> int:
    """Provision (or `--remove`) the service accounts; prints each service's URLs as environment lines."""
    env = os.environ
    parser = argparse.ArgumentParser(description="Create or update the least-privilege service accounts.")
    parser.add_argument("--database-url", default=env.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
                        help="the database owner's / admin's URL (DATABASE_URL)")
    parser.add_argument("--rabbitmq-url", default=env.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"),
                        help="the broker admin's AMQP URL; its vhost is the services' (RABBITMQ_URL)")
    parser.add_argument("--rabbitmq-api", default=env.get("RABBITMQ_API_URL", ""),
                        help="management API URL with admin credentials (RABBITMQ_API_URL); else rabbitmqctl")
    parser.add_argument("--rabbitmq-node", default=env.get("RABBITMQ_NODE", ""), help="rabbitmqctl's -n")
    parser.add_argument("--prefix", default=env.get("BROKER_PREFIX", "upscaling"), help="BROKER_PREFIX")
    parser.add_argument("--user-prefix", default=env.get("ACCOUNT_PREFIX", "upscaling"),
                        help="account names are <user-prefix>_<service> (ACCOUNT_PREFIX)")
    parser.add_argument("--remove", action="store_true", help="delete the accounts instead")
    args = parser.parse_args(argv)
    manager = user_manager(args.rabbitmq_api, args.rabbitmq_node)
    passwords = {s: env[name] for s, name in PASSWORD_ENV.items() if env.get(name)}
    service_accounts = accounts(args.user_prefix, passwords)
    if args.remove:
        asyncio.run(remove(args.database_url, manager, [a.user for a in service_accounts]))
        return 0
    urls = asyncio.run(provision(args.database_url, args.rabbitmq_url, args.prefix, manager, service_accounts))
    for service, service_urls in urls.items():
        generated = "" if service in passwords else f"  # password generated: set {PASSWORD_ENV[service]} to keep it"
        print(f"{service.upper()}_DATABASE_URL={service_urls.database_url}{generated}")
        print(f"{service.upper()}_RABBITMQ_URL={service_urls.rabbitmq_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
