"""`upscale`: the command line of the upscaling service.

Every command takes `--json` (machine-readable output on stdout) and exits with a code that says what
happened (see `ExitCode`); the service address and token come from `--address`/`--token` or the
`UPSCALE_ADDRESS`/`UPSCALE_TOKEN` variables."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from upscaling_client.client import DEFAULT_ADDRESS, Client, Task
from upscaling_client.errors import (
    AuthenticationError,
    ConflictError,
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
    UnavailableError,
    UpscalingError,
)
from upscaling_client.models import TaskInfo
from upscaling_client.progress import ProgressDisplay, counts_text
from upscaling_client.state import TaskState


class ExitCode(IntEnum):
    """What an `upscale` exit status means (see `MEANINGS`)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    PARTIAL = 3
    TASK_FAILED = 4
    TASK_CANCELED = 5
    NOT_FOUND = 6
    INVALID = 7
    AUTH = 8
    UNAVAILABLE = 9
    LIMIT = 10
    CONFLICT = 11
    INTERRUPTED = 130


MEANINGS = {
    ExitCode.OK: "done (run/watch: every job finished)", ExitCode.ERROR: "unexpected error",
    ExitCode.USAGE: "bad command line or unreadable file",
    ExitCode.PARTIAL: "task finished, some jobs failed or canceled",
    ExitCode.TASK_FAILED: "task failed", ExitCode.TASK_CANCELED: "task canceled",
    ExitCode.NOT_FOUND: "no such task (or not yours)", ExitCode.INVALID: "request rejected as invalid",
    ExitCode.AUTH: "authentication failed", ExitCode.UNAVAILABLE: "service unavailable",
    ExitCode.LIMIT: "a limit was exceeded", ExitCode.CONFLICT: "not possible in the task's state",
    ExitCode.INTERRUPTED: "interrupted by Ctrl-C (the task keeps running)",
}

ERROR_EXITS: list[tuple[type[UpscalingError], ExitCode]] = [
    (NotFoundError, ExitCode.NOT_FOUND), (InvalidArgumentError, ExitCode.INVALID), (AuthenticationError, ExitCode.AUTH),
    (UnavailableError, ExitCode.UNAVAILABLE), (LimitExceededError, ExitCode.LIMIT), (ConflictError, ExitCode.CONFLICT)]

EPILOG = "Exit codes: " + "; ".join(f"{int(code)} {text}" for code, text in MEANINGS.items()) + "."
app = typer.Typer(help="Run an openEO UDP over a whole region with the upscaling service, and get its results.",
                  epilog=EPILOG, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]
TaskIdArg = Annotated[int, typer.Argument(help="task id", min=1)]


def task_exit(info: TaskInfo) -> ExitCode:
    """The exit code of a terminal task."""
    if info.status == "finished":
        return ExitCode.OK if info.job_counts.get("finished", 0) == info.total else ExitCode.PARTIAL
    return {"failed": ExitCode.TASK_FAILED, "canceled": ExitCode.TASK_CANCELED}.get(info.status, ExitCode.OK)


def _client(ctx: typer.Context) -> Client:
    return ctx.obj["client"]


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")
    sys.stdout.flush()


def _parameters(values: list[str]) -> dict[str, Any]:
    """``year=2024`` → {"year": 2024}: values are JSON when they parse as JSON, else text."""
    parameters: dict[str, Any] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{value!r} is not NAME=VALUE", param_hint="-p")
        try:
            parameters[name] = json.loads(text)
        except ValueError:
            parameters[name] = text
    return parameters


def _read_geojson(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"cannot read GeoJSON from {path}: {exc}") from None


@app.callback()
def main_options(ctx: typer.Context,
                 address: Annotated[str, typer.Option(envvar="UPSCALE_ADDRESS",
                                                      help="gRPC address of the service")] = DEFAULT_ADDRESS,
                 token: Annotated[str | None, typer.Option(envvar="UPSCALE_TOKEN",
                                                           help="API key or OIDC access token")] = None) -> None:
    client = Client(address, token)
    ctx.obj = {"client": client}
    ctx.call_on_close(client.close)


@app.command()
def tiles(ctx: typer.Context, aoi: Annotated[Path, typer.Argument(help="AOI GeoJSON file")],
          grid: Annotated[str, typer.Option(help="grid, e.g. 20x20km")] = "20x20km",
          output: Annotated[Path | None, typer.Option("-o", "--output", help="write the tiles here")] = None,
          full_cells: Annotated[bool, typer.Option(help="whole cells, not clipped to the AOI")] = False,
          as_json: JsonOpt = False) -> None:
    """Split an AOI into the tiles of a grid (a GeoJSON FeatureCollection)."""
    found = _client(ctx).tiles(_read_geojson(aoi), grid, full_cells=full_cells)
    collection = found.to_geojson()
    if output is not None:
        output.write_text(json.dumps(collection))
    if as_json:
        _print_json(collection if output is None else {"tiles": len(found), "grid": found.grid,
                                                       "output": str(output), "warnings": list(found.warnings)})
        return
    zones = sorted({t.zone for t in found})
    out.print(f"{len(found)} tiles of {found.grid} in zone{'s' if len(zones) > 1 else ''} {', '.join(zones)}"
              + (f" → {output}" if output else ""))
    for warning in found.warnings:
        err.print(f"[yellow]warning:[/] {warning}")


def follow(task: Task, as_json: bool, after: int = 0) -> TaskInfo:
    """Follow a task to its end: live progress on stderr, or JSON lines of its events on stdout."""
    state = TaskState(task.id)
    events = task.watch(after)
    with contextlib.closing(events):  # Ctrl-C: the stream is cancelled before anything else is asked
        if as_json:
            for event in events:
                state.apply(event)
                _print_json(event.to_dict())
            return task.refresh()
        with ProgressDisplay(state, console=err) as display:
            for event in events:
                state.apply(event)
                display.update()
    return task.refresh()


def _exit_now(code: int) -> NoReturn:
    """Leave at once after Ctrl-C stopped a watch: the interrupt may have landed inside the gRPC library while it
    held a lock of the (cancelled) stream, and closing the channel at interpreter exit then waits for it forever
    (seen as a CLI that printed its answer and never exited)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))


def _interrupted(task: Task, as_json: bool) -> ExitCode:
    """Ctrl-C while following: ask whether to cancel the task (only when someone can answer)."""
    interactive = sys.stdin.isatty() and not as_json
    if interactive and typer.confirm(f"\nCancel task {task.id} on the service?", default=False, err=True):
        info = task.cancel()
        err.print(f"task {task.id} {info.status}")
        return ExitCode.TASK_CANCELED
    err.print(f"\ntask {task.id} keeps running; follow it with: upscale watch {task.id}")
    return ExitCode.INTERRUPTED


def _finish(task: Task, info: TaskInfo, as_json: bool) -> None:
    if as_json:
        _print_json(info.to_dict(jobs=False))
    else:
        out.print(f"task {info.id} {info.status}: {counts_text(info.job_counts)}")
    raise typer.Exit(task_exit(info))


@app.command()
def run(ctx: typer.Context,
        udp: Annotated[str, typer.Option(help="URL of the UDP (process definition JSON)")],
        aoi: Annotated[Path, typer.Option(help="AOI GeoJSON file")],
        backend: Annotated[str, typer.Option(envvar="UPSCALE_BACKEND", help="openEO backend URL")],
        grid: Annotated[str, typer.Option(help="grid, e.g. 20x20km")] = "20x20km",
        param: Annotated[list[str] | None, typer.Option("-p", "--param", help="UDP parameter NAME=VALUE")] = None,
        title: Annotated[str | None, typer.Option(help="task title")] = None,
        format: Annotated[str | None, typer.Option(help="gtiff, geojson, netcdf or json")] = None,
        dimension: Annotated[str, typer.Option(help="UDP parameter receiving each tile")] = "spatial_extent",
        max_attempts: Annotated[int | None, typer.Option(min=1, max=5, help="submissions per failing job")] = None,
        wait: Annotated[bool, typer.Option(help="follow the task until it ends")] = True,
        as_json: JsonOpt = False) -> None:
    """Create a task over the tiles of an AOI and follow it with live progress (Ctrl-C asks whether to cancel)."""
    client = _client(ctx)
    task = client.submit(udp, backend=backend, aoi=_read_geojson(aoi), grid=grid,
                         parameters=_parameters(param or []), title=title, format=format, dimension=dimension,
                         max_attempts=max_attempts)
    if not as_json:
        err.print(f"task {task.id} created: {task.info.total} jobs")
    if not wait:
        if as_json:
            _print_json(task.info.to_dict(jobs=False))
        else:
            out.print(task.id)
        return
    try:
        info = follow(task, as_json)
    except KeyboardInterrupt:
        _exit_now(_interrupted(task, as_json))
    _finish(task, info, as_json)


@app.command("sync")
def sync_job(ctx: typer.Context,
             udp: Annotated[str, typer.Option(help="URL of the UDP (process definition JSON)")],
             backend: Annotated[str, typer.Option(envvar="UPSCALE_BACKEND", help="openEO backend URL")],
             output: Annotated[Path, typer.Option("-o", "--output", help="write the result file here")],
             param: Annotated[list[str] | None, typer.Option("-p", "--param", help="UDP parameter NAME=VALUE")] = None,
             title: Annotated[str | None, typer.Option(help="job title")] = None,
             format: Annotated[str | None, typer.Option(help="gtiff, geojson, netcdf or json")] = None,
             as_json: JsonOpt = False) -> None:
    """Run a UDP once over a small AOI, synchronously, and write its result file."""
    result = _client(ctx).run_sync(udp, backend=backend, parameters=_parameters(param or []), title=title,
                                   format=format)
    result.save(output)
    if as_json:
        _print_json({"output": str(output), "content_type": result.content_type, "size": len(result.content)})
    else:
        out.print(f"{output}: {len(result.content)} bytes ({result.content_type})")


@app.command()
def watch(ctx: typer.Context, task_id: TaskIdArg,
          after: Annotated[int, typer.Option(min=0, help="resume after this event sequence")] = 0,
          as_json: JsonOpt = False) -> None:
    """Follow a task until it ends (JSON lines of its events with --json)."""
    task = _client(ctx).task(task_id)
    try:
        info = follow(task, as_json, after)
    except KeyboardInterrupt:
        _exit_now(ExitCode.INTERRUPTED)
    _finish(task, info, as_json)


@app.command("ls")
def list_tasks(ctx: typer.Context,
               status: Annotated[list[str] | None, typer.Option(help="only tasks in this status")] = None,
               limit: Annotated[int, typer.Option(min=1, help="at most this many")] = 50,
               as_json: JsonOpt = False) -> None:
    """List your tasks, newest first."""
    found = _client(ctx).tasks(status, limit)
    if as_json:
        _print_json([t.to_dict(jobs=False) for t in found])
        return
    table = Table("id", "title", "status", "jobs", "by status", "created")
    for t in found:
        table.add_row(str(t.id), t.title, t.status, str(t.total), counts_text(t.job_counts),
                      t.created.strftime("%Y-%m-%d %H:%M:%S") if t.created else "")
    out.print(table)


@app.command()
def show(ctx: typer.Context, task_id: TaskIdArg, jobs: Annotated[bool, typer.Option(help="list the jobs")] = False,
         as_json: JsonOpt = False) -> None:
    """Show a task: status, counts per job status, service (and its jobs with --jobs)."""
    info = _client(ctx).task(task_id).info
    if as_json:
        _print_json(info.to_dict(jobs=True))
        return
    out.print(f"[bold]task {info.id}[/] {info.title}\n  status      {info.status}\n"
              f"  jobs        {info.total}: {counts_text(info.job_counts)}\n  backend     {info.endpoint}\n"
              f"  UDP         {info.application}\n  parameters  {json.dumps(info.parameters)}\n"
              f"  created     {info.created}\n  updated     {info.updated}")
    if jobs:
        table = Table("job", "status", "backend job", "progress", "message")
        for job in info.jobs:
            table.add_row(str(job.id), job.status, job.backend_job_id, f"{job.progress:.0f} %", job.message)
        out.print(table)


@app.command()
def cancel(ctx: typer.Context, task_id: TaskIdArg, as_json: JsonOpt = False) -> None:
    """Cancel a task (jobs not yet submitted never are; running ones are stopped)."""
    info = _client(ctx).task(task_id).cancel()
    if as_json:
        _print_json(info.to_dict(jobs=False))
    else:
        out.print(f"task {info.id} {info.status}: {counts_text(info.job_counts)}")


@app.command()
def retry(ctx: typer.Context, task_id: TaskIdArg, as_json: JsonOpt = False) -> None:
    """Submit a task's failed jobs again."""
    task = _client(ctx).task(task_id)
    retried = task.retry_failed()
    if as_json:
        _print_json({**task.info.to_dict(jobs=False), "retried": retried})
    else:
        out.print(f"task {task.id}: {retried} failed job{'s' if retried != 1 else ''} submitted again")


@app.command()
def results(ctx: typer.Context, task_id: TaskIdArg,
            download: Annotated[Path | None, typer.Option(help="download every asset into this folder")] = None,
            mosaic: Annotated[Path | None, typer.Option(
                help="assemble the tiles: .tif (COG + VRT), .vrt, .geojson or .parquet")] = None,
            workers: Annotated[int, typer.Option(min=1, help="parallel downloads")] = 8,
            as_json: JsonOpt = False) -> None:
    """The task's results (STAC items); --download fetches them, --mosaic assembles them into one product."""
    task = _client(ctx).task(task_id)
    items = task.results()
    body: dict[str, Any] = {"task_id": task_id, "status": task.info.status, "items": len(items)}
    if download is not None:
        files = task.download(download, workers=workers)
        body["downloaded"] = [str(f) for f in files]
    if mosaic is not None:
        body["mosaic"] = str(task.mosaic(mosaic, download, workers=workers))
        if mosaic.suffix.lower() in (".tif", ".tiff"):
            body["vrt"] = str(mosaic.with_suffix(".vrt"))
    if as_json:
        _print_json({**body, "features": items} if download is None and mosaic is None else body)
        return
    table = Table("item", "tile", "asset", "href")
    for item in items:
        for name, asset in item["assets"].items():
            table.add_row(item["id"], item["properties"].get("title", ""), name, asset["href"])
    out.print(table)
    out.print(f"{len(items)} items of task {task_id} ({task.info.status})")
    if "downloaded" in body:
        out.print(f"{len(body['downloaded'])} files in {download}")
    if "mosaic" in body:
        out.print(f"mosaic: {body['mosaic']}" + (f" (VRT: {body['vrt']})" if "vrt" in body else ""))


def main(argv: list[str] | None = None) -> int:
    """Entry point of `upscale`: runs a command, mapping errors to exit codes and messages."""
    try:
        code = app(args=argv, standalone_mode=False)  # click returns the code of typer.Exit
    except UpscalingError as exc:
        code = next((c for cls, c in ERROR_EXITS if isinstance(exc, cls)), ExitCode.ERROR)
        if "--json" in (argv if argv is not None else sys.argv):
            _print_json({"error": exc.code, "error_code": exc.error_code, "message": exc.message})
        err.print(f"[red]error:[/] {exc.message}" + (f" ({exc.error_code})" if exc.error_code else ""))
        return code
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    except typer.BadParameter as exc:
        exc.show()
        return ExitCode.USAGE
    except Exception as exc:  # click.UsageError and friends
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return ExitCode.USAGE if isinstance(exc, click.UsageError) else ExitCode.ERROR
        raise
    return code if isinstance(code, int) else ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
