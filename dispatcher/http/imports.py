"""Large imports without a blocked event loop: their rows checked in worker processes, their
writes run as background jobs (``dispatcher.store.jobs``).

Checking 100,000 recipients is seconds of CPU (pydantic, the phone-number library): in a
thread it would still hold the GIL against the event loop, so ``ImportChecker`` sends the raw
body to worker processes, each of which parses it and checks its own slice of the rows
(``check_terminal_rows``, ``check_recipient_rows``); the engine then takes the checked rows in
order (duplicates, one phone number on two rows), as a small import does in-line.

``ImportJobs`` runs an accepted import's writes as a named task whose state, progress and
result are in Redis. A task cancelled at shutdown marks its job ``interrupted``; so does this
instance at start for the jobs a crash left behind, and any instance for the job of another
whose lease lapsed (``interrupt_if_orphaned``).
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import os
import pickle
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import structlog

from dispatcher.core.errors import BadRequest, EbdError, ValidationFailed
from dispatcher.core.import_rows import Checked
from dispatcher.core.regions import RegionTree
from dispatcher.core.tasks import cancel_until_done
from dispatcher.http.requests import parse_json
from dispatcher.store.jobs import ACTIVE, Job, JobStore
from dispatcher.store.liveness import LivenessStore

log = structlog.get_logger(__name__)

# Rows per kind an import may hold, and the keys its JSON body may wrap them in.
MAX_ROWS = 100_000
WRAPPERS = {"terminals": "terminals", "recipients": "recipients"}
SHAPES = {
    "terminals": '[{"id", "region", "kind"}]',
    "recipients": '[{"phone", "name", "region", "role", "languages"}]',
}
NOUNS = {"terminals": "terminal", "recipients": "recipient"}
# Where each kind's row checks are: (module, function).
CHECKS = {
    "terminals": ("dispatcher.http.terminals", "check_terminal_rows"),
    "recipients": ("adapters.sms.recipients", "check_recipient_rows"),
}
# A body this small is checked in-line: a worker's round trip would cost more than it saves.
INLINE_BYTES = 128 * 1024

Progress = Callable[[int], Awaitable[None]]
# What a job's work returns: its result, and whether it handed out passwords.
Outcome = tuple[dict[str, Any], bool]
Work = Callable[[Job, Progress], Awaitable[Outcome]]

_TREE: RegionTree | None = None


# The checking workers' niceness: on a machine with as many cores as workers, they would
# take the cores from the engine's event loop while they check; niced, they take what the
# loop leaves (an import's checking is seconds, a /healthz answer must stay milliseconds).
WORKER_NICENESS = 10


def _init_worker(tree_blob: bytes) -> None:
    global _TREE
    os.nice(WORKER_NICENESS)
    # The engine's own tree, pickled by the engine for its own worker (in a thread, so that
    # the 1.5 MB of it never holds the event loop).
    _TREE = pickle.loads(tree_blob)  # noqa: S301


def body_rows(kind: str, body: Any) -> list[Any]:
    """The rows of an import body: a JSON list, or an object holding it under its kind."""
    from dispatcher.core.import_rows import check_shape

    if isinstance(body, dict) and WRAPPERS[kind] in body:
        body = body[WRAPPERS[kind]]
    return check_shape(body, noun=NOUNS[kind], shape=SHAPES[kind], max_items=MAX_ROWS)


def check_slice(
    kind: str, items: Sequence[Any], tree: RegionTree, start: int
) -> list[Checked[Any]]:
    """Rows ``start`` on (``items`` is their slice) checked each on its own."""
    numbers = range(start, start + len(items))
    # By name, in the worker: the recipients' checks are the SMS feature's, which this layer
    # may not import (tests/unit/test_layers.py).
    module, name = CHECKS[kind]
    check = getattr(importlib.import_module(module), name)
    return list(check(items, tree, row_label="item", row_numbers=numbers))


def _check_part(kind: str, raw: bytes, part: int, parts: int) -> tuple[str, Any]:
    """In a worker: parse the body, check the ``part``-th of ``parts`` slices of its rows.
    Errors come back as data: an exception's details do not survive pickling."""
    if _TREE is None:
        raise RuntimeError("the import worker was started without the region tree")
    try:
        items = body_rows(kind, parse_json(raw))
    except EbdError as exc:
        return "error", (isinstance(exc, BadRequest), exc.message, exc.details)
    low, high = len(items) * part // parts, len(items) * (part + 1) // parts
    return "ok", check_slice(kind, items[low:high], _TREE, low)


class ImportChecker:
    """Checks import bodies in ``workers`` processes, started at the first large import."""

    def __init__(self, tree: RegionTree, *, workers: int = 2) -> None:
        self._tree = tree
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._starting = asyncio.Lock()

    async def check(self, kind: str, raw: bytes) -> list[Checked[Any]]:
        """Every row of the body, checked, in order; ``BadRequest`` or ``ValidationFailed``
        for a body that is not a list of rows."""
        if len(raw) <= INLINE_BYTES:
            items = body_rows(kind, parse_json(raw))
            return check_slice(kind, items, self._tree, 0)
        pool = await self._started()
        loop = asyncio.get_running_loop()
        answers = await asyncio.gather(
            *(
                loop.run_in_executor(pool, _check_part, kind, raw, part, self._workers)
                for part in range(self._workers)
            )
        )
        checked: list[Checked[Any]] = []
        for status, value in answers:
            if status == "error":
                bad_request, message, details = value
                raise (BadRequest if bad_request else ValidationFailed)(message, details=details)
            checked.extend(value)
        return checked

    async def _started(self) -> ProcessPoolExecutor:
        async with self._starting:
            if self._pool is None:
                blob = await asyncio.to_thread(pickle.dumps, self._tree)
                # spawn: a fork of this process would copy its event loop and its threads.
                self._pool = ProcessPoolExecutor(
                    self._workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(blob,),
                )
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


class ImportJobs:
    """This instance's running import jobs."""

    def __init__(self, store: JobStore, liveness: LivenessStore) -> None:
        self.store = store
        self._liveness = liveness
        self.instance = liveness.instance
        self._running: dict[asyncio.Task[None], Job] = {}

    async def start(self, kind: str, *, office: str, total: int, work: Work) -> Job:
        """A new job of ``total`` rows, whose ``work`` runs from now on in a task of its own."""
        job = await self.store.create(kind, office=office, instance=self.instance, total=total)
        task = asyncio.create_task(self._run(job, work), name=f"import-{job.id}")
        self._running[task] = job
        task.add_done_callback(self._running.pop)
        log.info("import.job_started", job=job.id, kind=kind, office=office, rows=total)
        return job

    async def _run(self, job: Job, work: Work) -> None:
        await self.store.start(job)

        async def progress(done: int) -> None:
            await self.store.progress(job, done)

        try:
            result, has_secret = await work(job, progress)
        except EbdError as exc:
            log.warning("import.job_failed", job=job.id, error=exc.message)
            await self.store.fail(
                job, {"code": exc.code, "message": exc.message, "details": exc.details}
            )
            return
        except Exception:
            log.exception("import.job_crashed", job=job.id)
            await self.store.fail(
                job,
                {
                    "code": "job_failed",
                    "message": "the import stopped on an engine error (see its log); the rows "
                    "written so far stay: import the same rows again to finish",
                    "details": None,
                },
            )
            return
        await self.store.finish(job, result, has_secret=has_secret)
        log.info("import.job_done", job=job.id, **{k: v for k, v in result.items() if k in _LOGGED})

    async def recover(self) -> int:
        """At start: this instance's jobs that a crash left queued or running are interrupted
        (nothing of this process runs them). How many there were."""
        ids = await self.store.active_of(self.instance)
        for job_id in ids:
            job = await self.store.get(job_id)
            if job is not None:
                await self.store.fail(job, interrupted(job), state="interrupted")
        return len(ids)

    async def interrupt_if_orphaned(self, job: Job) -> Job:
        """``job`` as it stands: marked interrupted first if it is active and the instance
        running it has stopped (its lease lapsed)."""
        if job.state not in ACTIVE or job.instance == self.instance:
            return job
        if not await self._liveness.dead([job.instance]):
            return job
        await self.store.fail(job, interrupted(job), state="interrupted")
        return await self.store.get(job.id) or job

    async def close(self) -> None:
        """Stop every running job; each is marked interrupted with the rows it got to."""
        jobs = list(self._running.items())
        await cancel_until_done(*(task for task, _ in jobs))
        for _, job in jobs:
            current = await self.store.get(job.id)
            if current is not None and current.state in ACTIVE:
                await self.store.fail(current, interrupted(current), state="interrupted")


_LOGGED = ("created", "updated", "unchanged", "persons")


def interrupted(job: Job) -> Mapping[str, Any]:
    """The error of a job whose engine instance stopped before it finished."""
    return {
        "code": "interrupted",
        "message": f"the engine instance {job.instance!r} running this import stopped after "
        f"{job.done} of {job.total} rows; the rows written stay: import the same rows again "
        "to finish (rows already written come back unchanged)",
        "details": {"done": job.done, "total": job.total},
    }
