"""Live notebook displays for observables: a health plot, a job board and a text panel.

Each helper subscribes to an observable and keeps one IPython display output
up to date in place (``display_id`` and ``update_display_data``), so it works
in JupyterLab, Notebook 7 and a headless run (``nbclient``)::

    import rxrunpod.notebook as rn

    plot = rn.health_plot(ep.health(every=1.0))        # queue and workers, live
    board = rn.job_board(payloads.pipe(run_each(ep)))  # one row per job
    panel = rn.text_panel(chunks.pipe(texts()))        # streamed tokens
    rn.wait(board, panel, timeout=60)                  # last cell: a bounded wait
    plot.dispose()                                     # stops updates; last frame stays

Rules the helpers keep:

- Updates arrive from any thread. A helper never prints: ``print`` from a worker
  thread lands in whichever cell happens to run. It only updates its own
  display, which the front end finds by its display id.
- Redraws are throttled to one per ``interval`` seconds. Items arriving in
  between are merged into the next frame. The final frame is always drawn when
  the observable completes or fails and when the helper is disposed.
- The creating cell returns at once. Block only in a later cell, with
  ``wait(timeout)``. Do not block while the observable runs on the notebook's
  own asyncio loop: use ``await helper.wait_async(timeout)`` there.
- Every frame carries a JSON summary of the state under the MIME type
  ``SUMMARY_MIME``, so an executed notebook can be checked by a program.

Checked live in a browser in JupyterLab 4.6 and classic Notebook (nbclassic
1.3): each helper keeps one output that changes in place, with no duplicates
and the last frame kept. Notebook 7 and VS Code were not tried.

The plot is drawn with matplotlib's Agg canvas into PNG frames (no pyplot, so
no figure is shown twice), the board and the panel as HTML. Outside IPython
the helpers still subscribe and keep their summary, but show nothing.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import html
import io
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from reactivex import Observable
from reactivex.abc import DisposableBase, SchedulerBase
from reactivex.scheduler import EventLoopScheduler

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

__all__ = [
    "SUMMARY_MIME",
    "DisplaySink",
    "HealthPlot",
    "JobBoard",
    "LiveDisplay",
    "TextPanel",
    "health_plot",
    "job_board",
    "text_panel",
    "wait",
]

log = logging.getLogger("rxrunpod.notebook")

SUMMARY_MIME = "application/vnd.rxrunpod.summary+json"
"""MIME type of the machine-readable summary every frame carries."""

_T = TypeVar("_T")

_shared_scheduler: EventLoopScheduler | None = None
_shared_scheduler_lock = threading.Lock()

# NOTE: matplotlib is not thread-safe. Frames are drawn on the redraw thread
# and, for the final frame, on whichever thread completes or disposes, so every
# draw of every plot holds this lock.
_matplotlib_lock = threading.Lock()


def _redraw_scheduler() -> EventLoopScheduler:
    """Return the one thread that draws throttled frames for every helper.

    ``exit_if_empty`` lets the thread end while nothing is pending, so an idle
    kernel keeps no extra thread.
    """
    global _shared_scheduler
    with _shared_scheduler_lock:
        if _shared_scheduler is None:
            _shared_scheduler = EventLoopScheduler(exit_if_empty=True)
        return _shared_scheduler


class DisplaySink(Protocol):
    """Destination of frames: ``show`` receives the first frame, ``update`` replaces it in place.

    A frame is a MIME bundle, e.g. ``{"image/png": bytes, "text/plain": str,
    SUMMARY_MIME: dict}``. Tests and other front ends pass their own sink.
    """

    def show(self, bundle: Mapping[str, Any]) -> None: ...

    def update(self, bundle: Mapping[str, Any]) -> None: ...


class _IPythonSink:
    """One IPython display output, created by ``show`` and replaced by ``update``."""

    def __init__(self) -> None:
        self._handle: Any = None

    def show(self, bundle: Mapping[str, Any]) -> None:
        from IPython.display import display

        self._handle = display(dict(bundle), raw=True, display_id=True)  # type: ignore[no-untyped-call]

    def update(self, bundle: Mapping[str, Any]) -> None:
        if self._handle is not None:
            self._handle.update(dict(bundle), raw=True)


class _NullSink:
    """Sink used outside IPython: frames are dropped, the summary is still kept."""

    def show(self, bundle: Mapping[str, Any]) -> None:
        pass

    def update(self, bundle: Mapping[str, Any]) -> None:
        pass


def _default_sink() -> DisplaySink:
    try:
        from IPython.core.getipython import get_ipython
    except ImportError:
        return _NullSink()
    # IPython 8 leaves get_ipython unannotated and IPython 9 annotates it, so
    # calling it through a typed name keeps mypy quiet on both.
    current_shell: Callable[[], object] = get_ipython
    if current_shell() is None:
        return _NullSink()
    return _IPythonSink()


def _describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class LiveDisplay(abc.ABC, Generic[_T]):
    """One display output kept in step with an observable.

    Subclasses define how an item changes the state (``_absorb``), how to copy the
    state for drawing (``_snapshot``) and how to draw a copy (``_draw``).

    ``state`` is ``"running"``, then one of ``"completed"``, ``"failed"`` (the
    observable sent an error, or an item could not be shown) or ``"disposed"``.
    """

    kind = "live"

    def __init__(
        self,
        source: Observable[_T],
        *,
        interval: float,
        scheduler: SchedulerBase | None = None,
        sink: DisplaySink | None = None,
    ) -> None:
        if interval < 0:
            raise ValueError(f"interval must be 0 or more seconds, got {interval!r}")
        self.interval = interval
        self._scheduler = scheduler if scheduler is not None else _redraw_scheduler()
        self._sink = sink if sink is not None else _default_sink()

        self._state_lock = threading.RLock()
        self._render_lock = threading.RLock()
        self._finished = threading.Event()
        self._done_future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        self._state = "running"
        self._error: str | None = None
        self._items = 0
        self._frames = 0
        self._last_frame_at: datetime | None = None
        self._pending: DisposableBase | None = None
        self._subscription: DisposableBase | None = None

        self._publish(first=True)
        subscription = source.subscribe(
            on_next=self._on_next,
            on_error=self._on_error,
            on_completed=self._on_completed,
        )
        with self._state_lock:
            self._subscription = subscription
            finished_early = self._state != "running"
        if finished_early:
            subscription.dispose()

    # -- what subclasses provide ------------------------------------------

    @abc.abstractmethod
    def _absorb(self, item: _T) -> None:
        """Fold one item into the state; called with the state lock held."""

    @abc.abstractmethod
    def _snapshot(self) -> Any:
        """Copy what ``_draw`` needs; called with the state lock held."""

    @abc.abstractmethod
    def _draw(self, snapshot: Any, status: str) -> dict[str, Any]:
        """Draw one frame from a snapshot; returns the MIME bundle without the summary."""

    @abc.abstractmethod
    def _summary_fields(self) -> dict[str, Any]:
        """Helper-specific fields of the summary; called with the state lock held."""

    # -- public surface ----------------------------------------------------

    @property
    def state(self) -> str:
        """``"running"``, ``"completed"``, ``"failed"`` or ``"disposed"``."""
        return self._state

    @property
    def error(self) -> str | None:
        """``"ErrorType: message"`` of the error that ended the display, if any."""
        return self._error

    @property
    def done(self) -> bool:
        """True once the final frame is drawn."""
        return self._finished.is_set()

    def summary(self) -> dict[str, Any]:
        """Return the machine-readable state, as the latest frame carries it."""
        with self._state_lock:
            return self._summary_locked()

    def wait(self, timeout: float) -> bool:
        """Block until the observable ends or the helper is disposed, at most ``timeout`` seconds.

        Returns True when the final frame is drawn, False when the time ran
        out (the display keeps updating then). The kernel handles no other
        request while this blocks, so call it last in a cell.
        """
        return self._finished.wait(timeout)

    async def wait_async(self, timeout: float) -> bool:
        """Wait like ``wait`` without blocking the running asyncio loop."""
        try:
            await asyncio.wait_for(asyncio.wrap_future(self._done_future), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def dispose(self) -> None:
        """Stop following the observable and draw the final frame; the output stays."""
        self._finish("disposed", None)

    def __enter__(self) -> LiveDisplay[_T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._state}, {self._items} items, {self._frames} frames>"

    # -- observer ------------------------------------------------------------

    def _on_next(self, item: _T) -> None:
        with self._state_lock:
            if self._state != "running":
                return
            try:
                self._absorb(item)
            except Exception as error:  # an item this helper cannot show ends it
                failure: BaseException | None = error
            else:
                failure = None
                self._items += 1
                self._schedule_frame()
        if failure is not None:
            log.warning("%s stopped: cannot show item %r: %s", self.kind, item, failure)
            self._finish("failed", failure)

    def _on_error(self, error: Exception) -> None:
        self._finish("failed", error)

    def _on_completed(self) -> None:
        self._finish("completed", None)

    # -- frames ----------------------------------------------------------------

    def _schedule_frame(self) -> None:
        """Schedule one redraw unless one is pending; called with the state lock held."""
        if self._pending is not None:
            return
        delay = 0.0
        if self._last_frame_at is not None:
            since = (self._scheduler.now - self._last_frame_at).total_seconds()
            delay = max(0.0, self.interval - since)
        self._pending = self._scheduler.schedule_relative(timedelta(seconds=delay), self._redraw)

    def _redraw(self, scheduler: SchedulerBase, state: Any = None) -> None:
        with self._state_lock:
            self._pending = None
            if self._state != "running":
                return
        try:
            self._publish(first=False)
        except Exception as error:  # a drawing bug must not kill the redraw thread
            log.exception("%s: drawing a frame failed", self.kind)
            self._finish("failed", error)

    def _finish(self, state: str, error: BaseException | None) -> None:
        with self._state_lock:
            if self._state != "running":
                return
            self._state = state
            self._error = _describe_error(error) if error is not None else None
            pending, self._pending = self._pending, None
            subscription = self._subscription
        if pending is not None:
            pending.dispose()
        if subscription is not None:
            subscription.dispose()
        try:
            self._publish(first=False, final=True)
        except Exception:  # the caller may be a worker thread with nobody to report to
            log.exception("%s: drawing the final frame failed", self.kind)
        finally:
            self._finished.set()
            self._done_future.set_result(True)

    def _publish(self, *, first: bool, final: bool = False) -> None:
        # The render lock spans snapshot, draw and send, and a throttled frame
        # rechecks the state inside it, so a stale frame never replaces the final one.
        with self._render_lock:
            with self._state_lock:
                if not first and not final and self._state != "running":
                    return
                snapshot = self._snapshot()
                status = self._state
                self._frames += 1
                self._last_frame_at = self._scheduler.now
                summary = self._summary_locked()
            bundle = self._draw(snapshot, status)
            bundle[SUMMARY_MIME] = summary
            if first:
                self._sink.show(bundle)
            else:
                self._sink.update(bundle)

    def _summary_locked(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "kind": self.kind,
            "state": self._state,
            "error": self._error,
            "items": self._items,
            "frames": self._frames,
        }
        summary.update(self._summary_fields())
        return summary


# -- health plot -------------------------------------------------------------

_JOB_SERIES = (
    ("in_queue", "in queue"),
    ("in_progress", "in progress"),
    ("completed", "completed"),
    ("failed", "failed"),
)
_WORKER_SERIES = (
    ("idle", "idle"),
    ("running", "running"),
    ("initializing", "initializing"),
)


@dataclass(frozen=True)
class _HealthSnapshot:
    seconds: list[float]
    jobs: dict[str, list[int]]
    workers: dict[str, list[int]]


class HealthPlot(LiveDisplay[Any]):
    """Live line plot of ``Health`` snapshots: job counts above, worker counts below.

    The x axis is seconds (to the millisecond) since the first snapshot
    arrived, measured on the helper's scheduler when each snapshot arrives,
    not the server's clock. The newest ``max_points`` snapshots are kept.
    """

    kind = "health_plot"

    def __init__(
        self,
        source: Observable[Any],
        *,
        title: str = "endpoint health",
        interval: float = 0.5,
        max_points: int = 1000,
        scheduler: SchedulerBase | None = None,
        sink: DisplaySink | None = None,
    ) -> None:
        if max_points < 2:
            raise ValueError(f"max_points must be at least 2, got {max_points!r}")
        self.title = title
        self.max_points = max_points
        self._start: datetime | None = None
        self._seconds: list[float] = []
        self._jobs: dict[str, list[int]] = {name: [] for name, _ in _JOB_SERIES}
        self._workers: dict[str, list[int]] = {name: [] for name, _ in _WORKER_SERIES}
        self._figure: Figure | None = None
        self._lines: dict[str, Line2D] = {}
        super().__init__(source, interval=interval, scheduler=scheduler, sink=sink)

    def _absorb(self, item: Any) -> None:
        jobs = getattr(item, "jobs", None)
        workers = getattr(item, "workers", None)
        if jobs is None or workers is None:
            raise TypeError(
                "health_plot expects Health snapshots, e.g. from ep.health(every=...), "
                f"got {type(item).__name__}"
            )
        job_counts = {name: int(getattr(jobs, name)) for name, _ in _JOB_SERIES}
        worker_counts = {name: int(getattr(workers, name)) for name, _ in _WORKER_SERIES}

        now = self._scheduler.now
        if self._start is None:
            self._start = now
        self._seconds.append(round((now - self._start).total_seconds(), 3))
        for name, count in job_counts.items():
            self._jobs[name].append(count)
        for name, count in worker_counts.items():
            self._workers[name].append(count)

        if len(self._seconds) > self.max_points:
            del self._seconds[0]
            for series in (*self._jobs.values(), *self._workers.values()):
                del series[0]

    def _snapshot(self) -> _HealthSnapshot:
        return _HealthSnapshot(
            seconds=list(self._seconds),
            jobs={name: list(values) for name, values in self._jobs.items()},
            workers={name: list(values) for name, values in self._workers.items()},
        )

    def _summary_fields(self) -> dict[str, Any]:
        return {
            "points": len(self._seconds),
            "seconds": list(self._seconds),
            "series": {
                **{name: list(values) for name, values in self._jobs.items()},
                **{f"workers_{name}": list(values) for name, values in self._workers.items()},
            },
        }

    def _draw(self, snapshot: _HealthSnapshot, status: str) -> dict[str, Any]:
        with _matplotlib_lock:
            png = self._draw_png(snapshot, status)
        return {"image/png": png, "text/plain": self._describe(snapshot, status)}

    def _draw_png(self, snapshot: _HealthSnapshot, status: str) -> bytes:
        figure = self._figure if self._figure is not None else self._make_figure()
        jobs_axes, workers_axes = figure.axes
        for name, values in (*snapshot.jobs.items(), *snapshot.workers.items()):
            self._lines[name].set_data(snapshot.seconds, values)

        # Limits are set by hand: autoscaling stops after the first set_ylim,
        # and counts read best from zero.
        first = snapshot.seconds[0] if snapshot.seconds else 0.0
        last = snapshot.seconds[-1] if snapshot.seconds else 0.0
        jobs_axes.set_xlim(first, max(last, first + 1.0))
        for axes, series in ((jobs_axes, snapshot.jobs), (workers_axes, snapshot.workers)):
            peak = max((max(values) for values in series.values() if values), default=0)
            axes.set_ylim(0, max(peak, 1) * 1.1)
        heading = self.title if status == "running" else f"{self.title} ({status})"
        figure.suptitle(heading)

        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()

    def _make_figure(self) -> Figure:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        figure = Figure(figsize=(8, 5), dpi=80, layout="constrained")
        FigureCanvasAgg(figure)
        jobs_axes, workers_axes = figure.subplots(2, 1, sharex=True)
        for axes, series, label in (
            (jobs_axes, _JOB_SERIES, "jobs"),
            (workers_axes, _WORKER_SERIES, "workers"),
        ):
            for name, legend in series:
                (line,) = axes.plot([], [], drawstyle="steps-post", label=legend)
                self._lines[name] = line
            axes.set_ylabel(label)
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))
            axes.grid(True, alpha=0.3)
            axes.legend(loc="upper left", fontsize="small")
        workers_axes.set_xlabel("seconds")
        self._figure = figure
        return figure

    def _describe(self, snapshot: _HealthSnapshot, status: str) -> str:
        if not snapshot.seconds:
            return f"{self.title}: no snapshot yet ({status})"
        latest = ", ".join(f"{legend} {snapshot.jobs[name][-1]}" for name, legend in _JOB_SERIES)
        workers = ", ".join(
            f"{legend} {snapshot.workers[name][-1]}" for name, legend in _WORKER_SERIES
        )
        return (
            f"{self.title}: {len(snapshot.seconds)} snapshots ({status}); "
            f"jobs: {latest}; workers: {workers}"
        )


# -- job board ---------------------------------------------------------------

_STATUS_COLOURS = {
    "IN_QUEUE": "#6c757d",
    "IN_PROGRESS": "#0d6efd",
    "COMPLETED": "#198754",
    "FAILED": "#dc3545",
    "CANCELLED": "#fd7e14",
    "TIMED_OUT": "#d63384",
}


def _job_row(item: Any) -> dict[str, Any]:
    """Turn a ``JobState``, or a ``JobUpdate`` of ``run_each_updates``, into a table row."""
    attempt = None
    final = None
    inner = getattr(item, "state", None)
    if isinstance(getattr(inner, "id", None), str):
        attempt = getattr(item, "attempt", None)
        final = getattr(item, "final", None)
        item = inner

    job_id = getattr(item, "id", None)
    status = getattr(item, "status", None)
    if not isinstance(job_id, str) or status is None:
        raise TypeError(
            f"job_board expects JobState items, e.g. from run_each(ep), got {type(item).__name__}"
        )
    if final is None:
        final = getattr(item, "is_final", None)
    error_detail = getattr(item, "error_detail", None)
    return {
        "id": job_id,
        "status": str(status),
        "final": bool(final) if final is not None else None,
        "attempt": attempt,
        "delay_time": getattr(item, "delay_time", None),
        "execution_time": getattr(item, "execution_time", None),
        "worker_id": getattr(item, "worker_id", None),
        "error": error_detail.message if error_detail is not None else None,
    }


def _milliseconds(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _text_or_blank(value: object) -> str:
    return "" if value is None else html.escape(str(value))


class JobBoard(LiveDisplay[Any]):
    """Live HTML table with one row per job id: status, delay, execution time, worker, error.

    Items are ``JobState`` records (``run_each`` emits one per payload) or the
    ``JobUpdate`` records of ``run_each_updates``, which show each job moving
    through the queue. A later item for the same job id replaces its row.
    ``total``, when given, is the number of jobs expected and shows as progress.
    """

    kind = "job_board"

    def __init__(
        self,
        source: Observable[Any],
        *,
        title: str = "jobs",
        total: int | None = None,
        max_rows: int = 200,
        interval: float = 0.25,
        scheduler: SchedulerBase | None = None,
        sink: DisplaySink | None = None,
    ) -> None:
        self.title = title
        self.total = total
        self.max_rows = max_rows
        self._rows: dict[str, dict[str, Any]] = {}
        super().__init__(source, interval=interval, scheduler=scheduler, sink=sink)

    def _absorb(self, item: Any) -> None:
        row = _job_row(item)
        self._rows[row["id"]] = row

    def _snapshot(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._rows.values()]

    def _summary_fields(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "counts": _count_statuses(self._rows.values()),
            "jobs": [dict(row) for row in self._rows.values()],
        }

    def _draw(self, snapshot: list[dict[str, Any]], status: str) -> dict[str, Any]:
        return {
            "text/html": self._html(snapshot, status),
            "text/plain": self._text(snapshot, status),
        }

    def _heading(self, rows: list[dict[str, Any]], status: str) -> str:
        counts = _count_statuses(rows)
        seen = f"{len(rows)}/{self.total}" if self.total is not None else str(len(rows))
        tally = ", ".join(f"{count} {name.lower()}" for name, count in sorted(counts.items()))
        return f"{self.title}: {seen} jobs ({status})" + (f"; {tally}" if tally else "")

    def _html(self, rows: list[dict[str, Any]], status: str) -> str:
        parts = [
            '<div class="rxrunpod-job-board">',
            f"<b>{html.escape(self._heading(rows, status))}</b>",
            "<table><thead><tr><th>id</th><th>status</th><th>attempt</th><th>delay (ms)</th>"
            "<th>execution (ms)</th><th>worker</th><th>error</th></tr></thead><tbody>",
        ]
        for row in rows[-self.max_rows :]:
            colour = _STATUS_COLOURS.get(row["status"], "inherit")
            parts.append(
                "<tr>"
                f'<td style="white-space:nowrap"><code>{html.escape(row["id"])}</code></td>'
                f'<td style="color:{colour};font-weight:bold">{html.escape(row["status"])}</td>'
                f'<td style="text-align:right">{_text_or_blank(row["attempt"])}</td>'
                f'<td style="text-align:right">{_milliseconds(row["delay_time"])}</td>'
                f'<td style="text-align:right">{_milliseconds(row["execution_time"])}</td>'
                f"<td>{html.escape(row['worker_id'] or '')}</td>"
                f"<td>{html.escape(row['error'] or '')}</td>"
                "</tr>"
            )
        parts.append("</tbody></table>")
        if len(rows) > self.max_rows:
            parts.append(f"<i>{len(rows) - self.max_rows} earlier rows not shown</i>")
        parts.append("</div>")
        return "".join(parts)

    def _text(self, rows: list[dict[str, Any]], status: str) -> str:
        lines = [self._heading(rows, status)]
        for row in rows[-self.max_rows :]:
            lines.append(
                f"{row['id']}  {row['status']:<11}  delay {_milliseconds(row['delay_time']):>7} ms"
                f"  execution {_milliseconds(row['execution_time']):>7} ms"
            )
        return "\n".join(lines)


def _count_statuses(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


# -- text panel --------------------------------------------------------------


class TextPanel(LiveDisplay[Any]):
    """Live text panel that appends each item, e.g. the token deltas of ``texts()``.

    Items that are not strings are shown with ``str``. The panel shows the
    last ``max_chars`` characters; the summary keeps the whole text.
    """

    kind = "text_panel"

    def __init__(
        self,
        source: Observable[Any],
        *,
        title: str | None = None,
        max_chars: int = 20_000,
        interval: float = 0.1,
        scheduler: SchedulerBase | None = None,
        sink: DisplaySink | None = None,
    ) -> None:
        self.title = title
        self.max_chars = max_chars
        self._parts: list[str] = []
        super().__init__(source, interval=interval, scheduler=scheduler, sink=sink)

    def _absorb(self, item: Any) -> None:
        self._parts.append(item if isinstance(item, str) else str(item))

    @property
    def text(self) -> str:
        """All text received so far."""
        with self._state_lock:
            return "".join(self._parts)

    def _snapshot(self) -> str:
        return "".join(self._parts)

    def _summary_fields(self) -> dict[str, Any]:
        return {"chunks": len(self._parts), "text": "".join(self._parts)}

    def _draw(self, snapshot: str, status: str) -> dict[str, Any]:
        shown = snapshot[-self.max_chars :]
        cursor = "▌" if status == "running" else ""
        footer = "" if status in ("running", "completed") else f"\n[{status}: {self._error}]"
        heading = f"<b>{html.escape(self.title)}</b>" if self.title else ""
        body = html.escape(shown + cursor + footer)
        return {
            "text/html": f'{heading}<pre style="white-space:pre-wrap">{body}</pre>',
            "text/plain": shown + footer,
        }


# -- factories -----------------------------------------------------------------


def health_plot(
    source: Observable[Any],
    *,
    title: str = "endpoint health",
    interval: float = 0.5,
    max_points: int = 1000,
    scheduler: SchedulerBase | None = None,
    sink: DisplaySink | None = None,
) -> HealthPlot:
    """Show a live plot of ``Health`` snapshots, e.g. ``health_plot(ep.health(every=1.0))``.

    Plots jobs in queue, in progress, completed and failed, and workers idle,
    running and initializing, redrawing at most every ``interval`` seconds.
    ``ep.health(every=...)`` never completes: call ``dispose()`` to stop.
    """
    return HealthPlot(
        source,
        title=title,
        interval=interval,
        max_points=max_points,
        scheduler=scheduler,
        sink=sink,
    )


def job_board(
    source: Observable[Any],
    *,
    title: str = "jobs",
    total: int | None = None,
    max_rows: int = 200,
    interval: float = 0.25,
    scheduler: SchedulerBase | None = None,
    sink: DisplaySink | None = None,
) -> JobBoard:
    """Show a live table of ``JobState`` items, e.g. ``job_board(payloads.pipe(run_each(ep)))``.

    Subscribes to ``source`` once: a cold source that submits jobs submits them
    here. Completes when ``source`` does.
    """
    return JobBoard(
        source,
        title=title,
        total=total,
        max_rows=max_rows,
        interval=interval,
        scheduler=scheduler,
        sink=sink,
    )


def text_panel(
    source: Observable[Any],
    *,
    title: str | None = None,
    max_chars: int = 20_000,
    interval: float = 0.1,
    scheduler: SchedulerBase | None = None,
    sink: DisplaySink | None = None,
) -> TextPanel:
    """Show streamed text as it arrives, e.g. ``text_panel(chunks.pipe(texts()))``."""
    return TextPanel(
        source,
        title=title,
        max_chars=max_chars,
        interval=interval,
        scheduler=scheduler,
        sink=sink,
    )


def wait(*displays: LiveDisplay[Any], timeout: float) -> bool:
    """Block until every display is done, at most ``timeout`` seconds in all.

    Returns True when all finished in time. Use it as a notebook's last cell so
    the kernel stays busy until the final frames are drawn (a headless run
    records only output that arrives while a cell runs).
    """
    deadline = time.monotonic() + timeout
    return all(display.wait(max(0.0, deadline - time.monotonic())) for display in displays)
