"""The audit trail through a real token-mode gateway: creations, cancellations and retries (with their outcome
and correlation id) and an administrator's reads of another user's task are recorded and listed over HTTP and
gRPC; only administrators may list them."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
import requests

from tests import auth_support
from tests.auth_support import AuthGateway
from upscaling.v1 import audit_pb2, audit_pb2_grpc

token_gateway = auth_support.token_gateway


def entries(gw: AuthGateway, **filters: Any) -> list[dict[str, Any]]:
    reply = gw.call("GET", "/audit_log", "ops", params=filters)
    assert reply.status_code == 200, reply.text
    return reply.json()["entries"]


def test_changes_and_admin_reads_are_recorded(token_gateway: AuthGateway) -> None:
    gw = token_gateway
    cid = f"audit-{uuid.uuid4().hex}"
    created = requests.post(f"{gw.http}/upscale_tasks", json=gw.task_body(1), timeout=30,
                            headers={**gw.headers("alice"), "X-Correlation-ID": cid})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    refused = gw.call("POST", "/upscale_tasks", "alice",
                      json=gw.task_body(1, parameters={"year": 2024, "nope": 1}))
    assert refused.status_code == 422
    assert gw.call("POST", f"/upscale_tasks/{task_id}/cancel", "bob").status_code == 404  # not bob's
    assert gw.call("POST", f"/upscale_tasks/{task_id}/cancel", "alice").status_code in (200, 202)
    assert gw.call("POST", f"/upscale_tasks/{task_id}/retry", "alice").status_code == 409  # canceled
    assert gw.call("GET", f"/upscale_tasks/{task_id}", "ops").status_code == 200  # an admin's read
    assert gw.call("GET", f"/upscale_tasks/{task_id}", "ops").status_code == 200  # within the dedup window

    found = entries(gw, resource="task", resource_id=task_id)
    summary = [(e["action"], e["actor"], e["outcome"]) for e in reversed(found)]
    assert summary == [("task.create", "alice", "ok"), ("task.cancel", "bob", "TASK_NOT_FOUND"),
                       ("task.cancel", "alice", "ok"), ("task.retry", "alice", "TASK_CANCELED"),
                       ("admin.read", "ops", "ok")]
    create_entry = found[-1]
    assert create_entry["correlation_id"] == cid and create_entry["owner"] == "alice"
    assert found[0]["owner"] == "alice" and found[0]["admin"] is True
    assert all(e["time"] for e in found)
    failed = [e for e in entries(gw, actor="alice", action="task.create") if e["outcome"] == "VALIDATION_ERROR"]
    assert failed and "nope" in failed[0]["detail"]


def test_listing_is_for_admins_and_pages(token_gateway: AuthGateway) -> None:
    gw = token_gateway
    for user in ("alice", "bob"):
        gw.create(user)
    reply = gw.call("GET", "/audit_log", "alice")
    assert reply.status_code == 403 and "administrators" in reply.json()["message"]
    assert gw.call("GET", "/audit_log").status_code == 401
    assert gw.call("GET", "/audit_log", "ops", params={"page_token": "garbage"}).status_code == 422

    seen: list[int] = []
    token = ""
    for _ in range(100):
        page = gw.call("GET", "/audit_log", "ops", params={"page_size": 2, "page_token": token}).json()
        seen += [e["id"] for e in page["entries"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) >= 2

    with grpc.insecure_channel(gw.grpc) as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        reply = stub.ListAuditEntries(audit_pb2.ListAuditEntriesRequest(action="task.create", page_size=5),
                                      metadata=gw.md("ops"), timeout=30)
        assert reply.entries and all(e.action == "task.create" for e in reply.entries)
        assert {e.actor for e in reply.entries} >= {"bob"} and reply.entries[0].time.seconds > 0
        http_ids = [e["id"] for e in entries(gw, action="task.create", page_size=5)]
        assert [e.id for e in reply.entries] == http_ids
        with pytest.raises(grpc.RpcError) as denied:
            stub.ListAuditEntries(audit_pb2.ListAuditEntriesRequest(), metadata=gw.md("bob"), timeout=30)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as anonymous:
            stub.ListAuditEntries(audit_pb2.ListAuditEntriesRequest(), timeout=30)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
