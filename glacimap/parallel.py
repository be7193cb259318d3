"""Per-glacier fan-out: run one task per glacier, resumably, locally or on dask.distributed.

A task is done when its output file exists (outputs are written atomically, so an existing
file is always complete); re-running skips done tasks unless ``overwrite``. A task that fails
with a known error is recorded with its reason and does not stop the others. Tasks receive
plain data (paths, bounds, hrefs), never open datasets, so they can travel to dask workers.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from glacimap.errors import GlacimapError, PartialFailureError

log = logging.getLogger(__name__)

#: Errors that fail one glacier but not the run. Anything else is a bug and propagates.
TASK_ERRORS: tuple[type[BaseException], ...] = (GlacimapError, OSError, ValueError, RuntimeError)

Progress = Callable[["TaskOutcome", int], None]


@dataclass(frozen=True)
class Task:
    """One unit of work: ``func(payload, output)`` must write ``output`` atomically."""

    key: str
    output: Path
    payload: dict[str, Any] = field(default_factory=dict)
    #: Tasks of one group run one after the other on one dask worker (e.g. neighbouring
    #: glaciers, whose reads then share that worker's cache of source blocks).
    group: str | None = None


@dataclass(frozen=True)
class TaskOutcome:
    key: str
    status: Literal["ok", "skipped", "failed"]
    reason: str | None = None
    value: Any = None


def _run_one(func: Callable[[dict[str, Any], Path], Any], task: Task) -> TaskOutcome:
    try:
        value = func(task.payload, task.output)
    except TASK_ERRORS as exc:
        return TaskOutcome(task.key, "failed", f"{type(exc).__name__}: {exc}")
    return TaskOutcome(task.key, "ok", value=value)


def _run_group(func: Callable[[dict[str, Any], Path], Any], tasks: list[Task]) -> list[TaskOutcome]:
    return [_run_one(func, task) for task in tasks]


def spatial_groups(points: Sequence[tuple[float, float]], workers: int | None, per_worker: int = 4) -> list[str]:
    """Group names for tasks at ``points`` (x, y): neighbours share a group.

    Points are ordered along a Z-order (Morton) curve and cut into about ``per_worker`` groups
    per worker: enough groups to balance the load, few enough that most neighbours share one.
    """
    n = len(points)
    if n == 0:
        return []
    size = max(1, math.ceil(n / (per_worker * (workers or default_workers()))))
    xy = np.asarray(points, dtype=float)
    low, span = xy.min(axis=0), np.ptp(xy, axis=0)
    cells = np.floor((xy - low) / np.where(span > 0, span, 1.0) * 65535).astype(np.uint64)
    order = np.argsort([_interleave(int(cx), int(cy)) for cx, cy in cells], kind="stable")
    names = [""] * n
    for rank, index in enumerate(order):
        names[index] = f"group-{rank // size:05d}"
    return names


def _interleave(x: int, y: int) -> int:
    """Morton code of two 16-bit integers."""
    code = 0
    for bit in range(16):
        code |= ((x >> bit) & 1) << (2 * bit) | ((y >> bit) & 1) << (2 * bit + 1)
    return code


def default_workers() -> int:
    """Local workers when none are requested: one per available core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def dask_client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A dask.distributed client: the given scheduler, or a local cluster of processes."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    n = workers or default_workers()
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            yield client


def run_tasks(
    tasks: Sequence[Task],
    func: Callable[[dict[str, Any], Path], Any],
    *,
    overwrite: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> list[TaskOutcome]:
    """Run ``func`` for every task whose output is missing (or all with ``overwrite``).

    Runs in this process when ``workers == 1`` and no scheduler is given, else on dask; either
    way the tasks of one :attr:`Task.group` run one after the other (one dask task per group).
    Returns one outcome per task, in the order of ``tasks``.
    """
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError("task keys must be unique")
    outcomes: dict[str, TaskOutcome] = {}
    todo: list[Task] = []
    for task in tasks:
        if task.output.exists() and not overwrite:
            outcomes[task.key] = TaskOutcome(task.key, "skipped", "output exists")
            if progress:
                progress(outcomes[task.key], len(tasks))
        else:
            todo.append(task)
    if todo and scheduler is None and workers == 1:
        for task in sorted(todo, key=lambda t: t.group or ""):  # a group's tasks one after the other
            outcomes[task.key] = _run_one(func, task)
            if progress:
                progress(outcomes[task.key], len(tasks))
    elif todo:
        from distributed import as_completed

        groups: dict[str, list[Task]] = {}
        for task in todo:
            groups.setdefault(task.group if task.group is not None else f"task {task.key}", []).append(task)
        with dask_client(scheduler, workers) as client:
            futures = [client.submit(_run_group, func, members, pure=False) for members in groups.values()]
            for future in as_completed(futures):
                for outcome in future.result():
                    outcomes[outcome.key] = outcome
                    if progress:
                        progress(outcome, len(tasks))
    for outcome in outcomes.values():
        if outcome.status == "failed":
            log.warning("%s failed: %s", outcome.key, outcome.reason)
    return [outcomes[k] for k in keys]


def raise_if_failed(outcomes: Sequence[TaskOutcome], what: str, report: Path | None = None, result: Any = None) -> None:
    """Raise :class:`PartialFailureError` (exit code 3) if any outcome failed."""
    failed = [o for o in outcomes if o.status == "failed"]
    if not failed:
        return
    where = f"; reasons in {report}" if report else ""
    first = f" (first: {failed[0].key}: {failed[0].reason})"
    raise PartialFailureError(
        f"{len(failed)} of {len(outcomes)} {what} failed{first}{where}",
        failed=len(failed),
        total=len(outcomes),
        report=str(report) if report else None,
        result=result,
    )
