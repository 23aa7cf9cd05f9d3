"""The live progress display of a task (terminal and Jupyter, through rich): a bar of terminal jobs, the jobs
per status, the rate and the ETA. The CLI, `Task.wait(progress=True)` and `make run` all use it."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from upscaling_client.state import TaskState

STATUS_STYLES = {"created": "white", "queued": "cyan", "running": "yellow", "finished": "green",
                 "canceled": "magenta", "failed": "red", "unknown": "dim"}


def format_duration(seconds: float | None) -> str:
    """``75`` → ``"1:15"``; None → ``"?"``."""
    if seconds is None:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def counts_text(counts: dict[str, int], markup: bool = True) -> str:
    """``"finished 3 · running 2"``: the statuses some job has."""
    parts = []
    for status, n in counts.items():
        if n:
            parts.append(f"[{STATUS_STYLES.get(status, 'white')}]{status} {n}[/]" if markup else f"{status} {n}")
    return " · ".join(parts) or "no jobs"


def summary_line(state: TaskState, markup: bool = False) -> str:
    """One line: status, done/total, counts, rate, ETA (what non-interactive outputs print)."""
    return (f"task {state.task_id} {state.status}: {state.done}/{state.total} jobs done "
            f"({counts_text(state.counts, markup)}), {state.rate:.2f} jobs/s, ETA {format_duration(state.eta_s)}")


class ProgressDisplay:
    """A rich progress bar for one task, updated from its `TaskState`; a context manager.

    In a terminal or Jupyter it redraws in place; elsewhere (a log file, a pipe) it prints a summary line when
    the counts change, at most every `line_interval_s` seconds, and always the last one."""

    def __init__(self, state: TaskState, console: Console | None = None, line_interval_s: float = 5.0) -> None:
        self.state = state
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal or self.console.is_jupyter
        self.line_interval_s = line_interval_s
        self._last_line: tuple[str, float] | None = None
        self._progress = Progress(
            TextColumn("[bold]task {task.fields[number]}[/] {task.fields[status]}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f}"),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[rate]} · ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            console=self.console, transient=False, refresh_per_second=4)
        self._bar: TaskID | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.live:
            self._progress.start()
            self._bar = self._progress.add_task("task", total=max(self.state.total, 1), **self._fields())
        return self

    def __exit__(self, *exc: Any) -> None:
        self.update(final=True)
        if self.live:
            self._progress.stop()

    def _fields(self) -> dict[str, Any]:
        s = self.state
        return {"number": s.task_id, "status": s.status, "counts": counts_text(s.counts),
                "rate": f"{s.rate:.2f} jobs/s", "eta": format_duration(s.eta_s)}

    def update(self, final: bool = False) -> None:
        """Redraw from the state (or print a summary line when not live)."""
        if self.live and self._bar is not None:
            self._progress.update(self._bar, total=max(self.state.total, 1), completed=self.state.done,
                                  **self._fields())
            return
        if self.live:
            return
        line = summary_line(self.state)
        now = self.state.elapsed_s
        key = line.split(", ETA")[0].rsplit(",", 1)[0]
        if self._last_line and self._last_line[0] == key and not final:
            return
        if self._last_line and now - self._last_line[1] < self.line_interval_s and not final:
            return
        if final and self._last_line and self._last_line[0] == key:
            return
        self._last_line = (key, now)
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
