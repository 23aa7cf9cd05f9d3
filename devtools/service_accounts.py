"""`make run` under least privilege: each service of the dev stack gets its own RabbitMQ user and PostgreSQL role
(upscaling/accounts.py), provisioned with the machine's admin accounts (DATABASE_URL, RABBITMQ_URL; RabbitMQ users
through `rabbitmqctl`, or the management API at RABBITMQ_API_URL) and removed again when the launcher exits.
SERVICE_ACCOUNTS=0 runs every service under the admin accounts instead."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import sys

from upscaling import accounts
from upscaling.config import Settings


def stack_env(settings: Settings) -> dict[str, dict[str, str]]:
    """Per service, the DATABASE_URL and RABBITMQ_URL of its own account (none: every service runs as the admin)."""
    if os.environ.get("SERVICE_ACCOUNTS", "1").lower() in ("0", "false", "no", "off"):
        return {}
    api = os.environ.get("RABBITMQ_API_URL", "")
    if not api and not shutil.which("rabbitmqctl"):
        print("service accounts: no rabbitmqctl and no RABBITMQ_API_URL; every service runs as the admin",
              file=sys.stderr)
        return {}
    manager = accounts.user_manager(api, os.environ.get("RABBITMQ_NODE", ""))
    passwords = {s: os.environ[name] for s, name in accounts.PASSWORD_ENV.items() if os.environ.get(name)}
    service_accounts = accounts.accounts(settings.broker_prefix, passwords)
    users = [a.user for a in service_accounts]

    def remove() -> None:  # at exit no thread may start: the users one by one, then the roles
        for user in users:
            manager.delete_user(user)
        asyncio.run(accounts.drop_postgres(settings.database_url, users))

    atexit.register(remove)
    urls = asyncio.run(accounts.provision(settings.database_url, settings.rabbitmq_url, settings.broker_prefix,
                                          manager, service_accounts))
    print("service accounts: " + ", ".join(a.user for a in service_accounts) + " (least privilege)", flush=True)
    return {service: {"DATABASE_URL": u.database_url, "RABBITMQ_URL": u.rabbitmq_url} for service, u in urls.items()}
