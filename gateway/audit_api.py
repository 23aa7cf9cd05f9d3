"""The audit trail's listing over HTTP (`GET /audit_log`) and gRPC (`AuditService`), for administrators only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import asyncpg
import grpc
from fastapi import APIRouter, Query
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.audit import Filters
from gateway.auth import Principal, caller_or_fail
from gateway.http_tasks import Caller
from gateway.tasks import TaskService, decode_page_token, encode_page_token
from upscaling.errors import InvalidArgument, PermissionDenied
from upscaling.v1 import audit_pb2, audit_pb2_grpc

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


async def audit_page(tasks: TaskService, caller: Principal, filters: Filters, page_size: int, page_token: str
                     ) -> tuple[list[asyncpg.Record], str]:
    """A page of entries, newest first, and the next page's token ("" at the end)."""
    if not caller.admin:
        raise PermissionDenied("the audit trail is for administrators")
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be from 1 to {MAX_PAGE_SIZE}")
    if filters.resource_id is not None and not 0 < filters.resource_id < 2**63:
        raise InvalidArgument("resource_id must be a positive id")
    assert tasks.audit is not None
    size = page_size or DEFAULT_PAGE_SIZE
    rows = await tasks.audit.list(filters, size + 1, decode_page_token(page_token))
    return rows[:size], encode_page_token(rows[size - 1]["id"]) if len(rows) > size else ""


def entry_json(row: asyncpg.Record) -> dict[str, Any]:
    """One entry as JSON."""
    return {"id": row["id"], "time": row["at"].isoformat(), "actor": row["actor"], "admin": row["admin"],
            "action": row["action"], "resource": row["resource"], "resource_id": row["resource_id"],
            "owner": row["owner"], "outcome": row["outcome"], "detail": row["detail"],
            "correlation_id": row["correlation_id"]}


def create_audit_router(get_tasks: Callable[[], TaskService]) -> APIRouter:
    """`GET /audit_log`."""
    router = APIRouter(tags=["audit"])

    @router.get("/audit_log", summary="The audit trail, newest first (administrators only)",
                responses={403: {"description": "not an administrator"}})
    async def audit_log(who: Caller, actor: str = "", action: str = "", resource: str = "",
                        resource_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
                        page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
                        page_token: str = "") -> dict[str, Any]:
        rows, token = await audit_page(get_tasks(), who, Filters(actor, action, resource, resource_id), page_size,
                                       page_token)
        return {"entries": [entry_json(r) for r in rows], "next_page_token": token or None}

    return router


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """`AuditService` on the public gRPC port."""

    def __init__(self, get_tasks: Callable[[], TaskService]) -> None:
        self.get_tasks = get_tasks

    async def ListAuditEntries(self, request: audit_pb2.ListAuditEntriesRequest, context: grpc.aio.ServicerContext
                               ) -> audit_pb2.ListAuditEntriesResponse:
        filters = Filters(request.actor, request.action, request.resource, request.resource_id or None)
        rows, token = await audit_page(self.get_tasks(), caller_or_fail(), filters, request.page_size,
                                       request.page_token)
        entries = []
        for row in rows:
            at = Timestamp()
            at.FromDatetime(row["at"])
            entries.append(audit_pb2.AuditEntry(
                id=row["id"], time=at, actor=row["actor"], admin=row["admin"], action=row["action"],
                resource=row["resource"], resource_id=row["resource_id"] or 0, owner=row["owner"] or "",
                outcome=row["outcome"], detail=row["detail"], correlation_id=row["correlation_id"]))
        return audit_pb2.ListAuditEntriesResponse(entries=entries, next_page_token=token)
