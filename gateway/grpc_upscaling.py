"""`upscaling.v1.UpscalingService` on the gateway's public gRPC port."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway import workers
from gateway.auth import caller_or_fail
from gateway.events_hub import EventsHub
from gateway.sync_jobs import SyncJobs
from gateway.task_stac import item_collection, task_collection, task_items
from gateway.task_views import job_logs_proto, task_proto
from gateway.tasks import JobSpec, TaskService, TaskSpec
from gateway.udp import describe
from gateway.watch import watch_task
from upscaling.errors import InvalidArgument, Unavailable
from upscaling.limits import SubscriptionCounter
from upscaling.statuses import task_status_from_proto
from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc

FULL_NAME = upscaling_pb2.DESCRIPTOR.services_by_name["UpscalingService"].full_name
SYNC_CHUNK_BYTES = 1 << 20


def add_to_server(servicer: UpscalingServicer, server: grpc.aio.Server) -> None:
    """Register the servicer as the generated code does, except that WatchTask's and WatchTaskBatches' messages
    are sent as the bytes the servicer writes (serialized once per process, not once per watcher)."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}

    class _Collect:
        def add_generic_rpc_handlers(self, _: object) -> None:
            pass

        def add_registered_method_handlers(self, _: str, found: dict[str, grpc.RpcMethodHandler]) -> None:
            handlers.update(found)

    upscaling_pb2_grpc.add_UpscalingServiceServicer_to_server(servicer, _Collect())
    for name in ("WatchTask", "WatchTaskBatches"):
        handlers[name] = handlers[name]._replace(response_serializer=None)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(FULL_NAME, handlers),))
    server.add_registered_method_handlers(FULL_NAME, handlers)


def _loads(text: str, what: str, default: Any = None) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from exc


def _service(ref: common_pb2.ServiceRef) -> dict[str, Any]:
    # Several backends (`endpoints`) win over `endpoint`; naming both is refused by the task checks.
    endpoint: Any = list(ref.endpoints) if ref.endpoints else ref.endpoint
    if ref.endpoints and ref.endpoint:
        raise InvalidArgument("service: give either endpoint or endpoints, not both")
    service: dict[str, Any] = {"endpoint": endpoint, "application": ref.application}
    if ref.namespace:
        service["namespace"] = ref.namespace
    return service


class UpscalingServicer(upscaling_pb2_grpc.UpscalingServiceServicer):
    """The public task API over gRPC (errors raised as `upscaling.errors` and mapped by the interceptor). The caller
    comes from the AuthInterceptor; every task operation is scoped to it."""

    def __init__(self, tasks: TaskService, hub: EventsHub, watches: SubscriptionCounter | None = None,
                 sync: SyncJobs | None = None) -> None:
        self.tasks = tasks
        self.hub = hub
        self.watches = watches or SubscriptionCounter(0)
        self.sync = sync

    async def _task(self, task_id: int) -> upscaling_pb2.Task:
        view = await self.tasks.get_task(task_id, caller_or_fail())
        return task_proto(view.task, view.jobs)

    async def CreateTask(self, request: upscaling_pb2.CreateTaskRequest, context: grpc.aio.ServicerContext
                         ) -> upscaling_pb2.CreateTaskResponse:
        parameters = _loads(request.parameters_json, "parameters_json", {})
        values = [_loads(v, f"dimension.values_json[{i}]") for i, v in enumerate(request.dimension.values_json)]
        spec = TaskSpec(title=request.title, label=request.label, service=_service(request.service),
                        parameters=parameters, format=request.format or None,
                        dimension_name=request.dimension.name, dimension_values=values,
                        max_attempts=request.max_attempts or None,
                        max_costs=request.max_costs if request.HasField("max_costs") else None)
        task = await self.tasks.create_task(spec, caller_or_fail())
        return upscaling_pb2.CreateTaskResponse(task=task_proto(task, counts={"created": task["job_count"]}))

    async def GetTask(self, request: upscaling_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
                      ) -> upscaling_pb2.GetTaskResponse:
        return upscaling_pb2.GetTaskResponse(task=await self._task(request.task_id))

    async def ListTasks(self, request: upscaling_pb2.ListTasksRequest, context: grpc.aio.ServicerContext
                        ) -> upscaling_pb2.ListTasksResponse:
        statuses = []
        for value in request.statuses:
            if value == common_pb2.TASK_STATUS_UNSPECIFIED:
                raise InvalidArgument("statuses must not contain TASK_STATUS_UNSPECIFIED")
            try:
                statuses.append(task_status_from_proto(value))
            except ValueError:
                raise InvalidArgument(f"statuses contains the unknown task status value {value}") from None
        rows, counts, token = await self.tasks.list_tasks(statuses, request.page_size, request.page_token,
                                                          caller_or_fail())
        return upscaling_pb2.ListTasksResponse(tasks=[task_proto(r, counts=counts[r["id"]]) for r in rows],
                                               next_page_token=token)

    async def CancelTask(self, request: upscaling_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext
                         ) -> upscaling_pb2.CancelTaskResponse:
        await self.tasks.cancel_task(request.task_id, caller_or_fail())
        return upscaling_pb2.CancelTaskResponse(task=await self._task(request.task_id))

    async def RetryFailedJobs(self, request: upscaling_pb2.RetryFailedJobsRequest,
                              context: grpc.aio.ServicerContext) -> upscaling_pb2.RetryFailedJobsResponse:
        retried = await self.tasks.retry_failed(request.task_id, caller_or_fail())
        return upscaling_pb2.RetryFailedJobsResponse(task=await self._task(request.task_id), retried=retried)

    async def WatchTask(self, request: upscaling_pb2.WatchTaskRequest,
                        context: grpc.aio.ServicerContext) -> None:
        """Writes serialized `WatchTaskResponse`s (registered with a pass-through serializer by `add_to_server`); a
        coroutine handler rather than a generator, so no wrapper touches each message."""
        who = caller_or_fail()
        with self.watches.hold(who.user_id):
            await context.send_initial_metadata(((workers.WORKER_HEADER, str(workers.current())),))
            await watch_task(self.tasks, self.hub, request.task_id, who, context.write, request.after_sequence,
                             task_level=request.task_level_only)

    async def WatchTaskBatches(self, request: upscaling_pb2.WatchTaskBatchesRequest,
                               context: grpc.aio.ServicerContext) -> None:
        """WatchTask's events, several per message: serialized `WatchTaskBatchesResponse`s (see `watch_task`)."""
        who = caller_or_fail()
        with self.watches.hold(who.user_id):
            await context.send_initial_metadata(((workers.WORKER_HEADER, str(workers.current())),))
            await watch_task(self.tasks, self.hub, request.task_id, who, context.write, request.after_sequence,
                             task_level=request.task_level_only, batched=True)

    async def GetJobResults(self, request: upscaling_pb2.GetJobResultsRequest, context: grpc.aio.ServicerContext
                            ) -> upscaling_pb2.GetJobResultsResponse:
        results = await self.tasks.job_results(request.job_id, caller_or_fail())
        return upscaling_pb2.GetJobResultsResponse(stac_json=json.dumps(results))

    async def GetTaskResults(self, request: upscaling_pb2.GetTaskResultsRequest,
                             context: grpc.aio.ServicerContext) -> upscaling_pb2.GetTaskResultsResponse:
        task, jobs = await self.tasks.task_results(request.task_id, caller_or_fail())
        items = task_items(task, jobs)
        return upscaling_pb2.GetTaskResultsResponse(stac_json=json.dumps(item_collection(task, items)),
                                                    collection_json=json.dumps(task_collection(task, items)))

    async def GetJobLogs(self, request: upscaling_pb2.GetJobLogsRequest, context: grpc.aio.ServicerContext
                         ) -> upscaling_pb2.GetJobLogsResponse:
        return job_logs_proto(request.job_id, await self.tasks.job_logs(request.job_id, caller_or_fail()))

    async def DescribeService(self, request: upscaling_pb2.DescribeServiceRequest,
                              context: grpc.aio.ServicerContext) -> upscaling_pb2.DescribeServiceResponse:
        caller_or_fail()
        udp = await self.tasks.describe(request.label, _service(request.service))
        return upscaling_pb2.DescribeServiceResponse(parameters=[
            upscaling_pb2.ServiceParameter(
                name=p["name"], type=p["type"], optional=p["optional"], description=p["description"],
                default_json="" if p["default"] is None else json.dumps(p["default"]),
                options_json=json.dumps(p["options"]))
            for p in describe(udp)])

    async def RunSyncJob(self, request: upscaling_pb2.RunSyncJobRequest, context: grpc.aio.ServicerContext
                         ) -> AsyncIterator[upscaling_pb2.RunSyncJobResponse]:
        """The result of a synchronous job in chunks of SYNC_CHUNK_BYTES (the first with its media type and size)."""
        who = caller_or_fail()
        if self.sync is None:
            raise Unavailable("synchronous jobs are not available on this gateway")
        spec = JobSpec(title=request.title, label=request.label, service=_service(request.service),
                       parameters=_loads(request.parameters_json, "parameters_json", {}),
                       format=request.format or None)
        result = await self.sync.run(spec, who)
        content = result.content
        yield upscaling_pb2.RunSyncJobResponse(content_type=result.media_type, size=len(content),
                                               chunk=content[:SYNC_CHUNK_BYTES])
        for start in range(SYNC_CHUNK_BYTES, len(content), SYNC_CHUNK_BYTES):
            yield upscaling_pb2.RunSyncJobResponse(chunk=content[start:start + SYNC_CHUNK_BYTES])
