"""Which instance schedules drills, and its APScheduler.

Every engine instance runs a ``DrillScheduler``; the one holding a Redis lease (renewed every
third of ``lease_seconds``, taken over by another instance when it lapses) runs an APScheduler
``AsyncIOScheduler`` whose jobs live in Redis (``RedisJobStore``), so planned drills survive
restarts. Our drill records are the truth and the job store follows them: whenever the plan
changes (a version counter in Redis) the holder adds, moves and removes jobs to match.

A drill due while no instance held the lease is run when one takes it, if it is within
``grace`` (APScheduler's ``misfire_grace_time``, hours rather than its default of one second),
and its report says how late and why; past that, APScheduler reports the job missed and the
drill is marked missed with the reason: never dropped silently. The dispatch itself carries the
idempotency key ``drill:{id}:{time}``, so a drill fired by two instances in a lease handover
is still one alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import redis
import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.redis import RedisJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_PAUSED

from dispatcher.core.errors import StoreUnavailable
from dispatcher.core.models import utcnow
from dispatcher.store.keys import APS_JOBS, APS_RUN_TIMES
from drills import jobs
from drills.models import Drill, DrillStatus
from drills.settings import DrillSettings
from drills.store import DrillStore

log = structlog.get_logger(__name__)

REPORT_SUFFIX = ":report"
# Seconds between reconciles when nothing changed: retries failed jobs and finishes work an
# instance left half-done.
RECONCILE_EVERY = 30.0
SEEK_EVERY = 1.0


class DrillRunner(jobs.Runner, Protocol):
    async def missed(self, drill_id: str, reason: str) -> None: ...

    async def resume(self, drill_id: str) -> None: ...

    async def ensure_redrill(self, drill_id: str) -> None: ...

    def collects_late(self, drill: Drill, now: datetime) -> bool: ...

    async def collect_late(self, drill: Drill) -> object: ...


class DrillScheduler:
    def __init__(
        self,
        store: DrillStore,
        settings: DrillSettings,
        *,
        instance: str,
        redis_pool: Callable[[], redis.ConnectionPool],
    ) -> None:
        self._store = store
        # The service that fires and reports drills; given to ``run``, which is the only path
        # to every use of it (the service in turn holds this scheduler as its timeline).
        self._runner: DrillRunner
        self._settings = settings
        self._instance = instance
        # A new pool on the Redis primary (through Sentinel, if configured) for each job store.
        self._redis_pool = redis_pool
        self._aps: AsyncIOScheduler | None = None
        self._seen_version = -1
        # When this instance took the lease, and until when the previous holder was alive:
        # the gap is why a drill ran late or was missed.
        self.leader_since: datetime | None = None
        self.previous_heartbeat: datetime | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # The background pass that folds late acks into reported drills' review logs: apart
        # from the lease loop, whose renewals a long read of the ack log must not delay.
        self._collecting: asyncio.Task[None] | None = None
        self._reconciled_at = datetime.min.replace(tzinfo=UTC)
        self._job_failed = False

    @property
    def leading(self) -> bool:
        return self._aps is not None

    async def run(self, runner: DrillRunner) -> None:
        """Hold or seek the drill-scheduler lease until cancelled; ``runner`` fires the drills."""
        self._runner = runner
        interval = self._settings.lease_seconds / 3
        try:
            while True:
                try:
                    await self.tick()
                except StoreUnavailable as exc:
                    # Unable to renew means unable to know: stop scheduling before the lease
                    # lapses and another instance takes over.
                    log.warning("drills.store_down", error=exc.message)
                    self._step_down()
                # Those waiting look every second: a holder whose liveness lease lapsed is
                # replaced that soon (lease.lua), not a third of the drill lease later.
                await asyncio.sleep(interval if self.leading else min(interval, SEEK_EVERY))
        finally:
            self._step_down()
            collecting, self._collecting = self._collecting, None
            if collecting is not None:
                collecting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await collecting
            with contextlib.suppress(StoreUnavailable, asyncio.CancelledError):
                await asyncio.shield(self._store.release_lease(self._instance))

    async def tick(self) -> None:
        now = utcnow()
        held, info = await self._store.hold_lease(
            self._instance,
            ttl_ms=int(self._settings.lease_seconds * 1000),
            now_ms=int(now.timestamp() * 1000),
        )
        if held and self._aps is None:
            self._become_leader(now, info)
        elif not held and self._aps is not None:
            log.warning("drills.lease_lost", holder=info)
            self._step_down()
        if held:
            version = await self._store.version()
            # Also now and then without a change: a job that failed (Redis away while it
            # ran) is gone from the store, and only a reconcile gives it another try.
            stale = now - self._reconciled_at > timedelta(seconds=RECONCILE_EVERY)
            if version != self._seen_version or stale or self._job_failed:
                self._job_failed = False
                await self.reconcile()
                self._seen_version = version
                self._reconciled_at = now

    def _become_leader(self, now: datetime, previous: str) -> None:
        beat = previous.split(" ")[0] if previous else ""
        self.previous_heartbeat = (
            datetime.fromtimestamp(int(beat) / 1000, UTC) if beat.isdigit() else None
        )
        self.leader_since = now
        store = RedisJobStore(
            jobs_key=APS_JOBS,
            run_times_key=APS_RUN_TIMES,
            connection_pool=self._redis_pool(),
        )
        self._aps = AsyncIOScheduler(
            jobstores={"default": store},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
        )
        self._aps.add_listener(self._on_missed, EVENT_JOB_MISSED)
        self._aps.add_listener(self._on_error, EVENT_JOB_ERROR)
        jobs.activate(self._runner)
        self._seen_version = -1
        # Started paused: reconcile first, so a drill cancelled while no one led is removed
        # before APScheduler could run its stale job.
        self._aps.start(paused=True)
        log.info(
            "drills.leading",
            instance=self._instance,
            previous_heartbeat=self.previous_heartbeat.isoformat()
            if self.previous_heartbeat
            else None,
        )

    def _step_down(self) -> None:
        if self._aps is None:
            return
        jobs.deactivate(self._runner)
        with contextlib.suppress(Exception):
            self._aps.shutdown(wait=False)
        self._aps = None
        log.info("drills.stepped_down", instance=self._instance)

    async def reconcile(self) -> None:
        """Make the job store match the drill records, then let APScheduler run.

        The first reconcile after taking the lease reads every drill; later ones only those
        scheduled from a day and the grace before now: every drill that can still need a job
        or a late step is there (they run every 30 s), and the years of drills done before
        stay unread however many there are."""
        aps = self._aps
        if aps is None:
            return
        now = utcnow()
        full = aps.state == STATE_PAUSED
        if full:
            drills = await self._store.all()
        else:
            since = now - timedelta(seconds=self._settings.grace + self._settings.window + 86400)
            drills = await self._store.between(int(since.timestamp() * 1000), "+inf")
        read = {d.id for d in drills}
        existing = {job.id: job for job in aps.get_jobs()}
        wanted: set[str] = set()
        grace = timedelta(seconds=self._settings.grace)
        redrilled = {d.redrill_of for d in drills if d.redrill_of}
        for drill in drills:
            if drill.status is DrillStatus.FAILED and drill.id not in redrilled:
                await self._runner.ensure_redrill(drill.id)
            if drill.status is DrillStatus.RUNNING and drill.alert_id is None:
                # Claimed by an instance that died before it dispatched: finish it.
                await self._runner.resume(drill.id)
            if drill.status is DrillStatus.PLANNED:
                wanted.add(drill.id)
                job = existing.get(drill.id)
                if job is not None and job.next_run_time == drill.scheduled_at:
                    continue
                if job is None and drill.scheduled_at < now - grace:
                    # Its job is gone too (a job store lost with Redis): missed all the same.
                    await self._runner.missed(drill.id, self.why(drill.scheduled_at, missed=True))
                    continue
                aps.add_job(
                    jobs.FIRE,
                    "date",
                    run_date=drill.scheduled_at,
                    args=[drill.id, drill.scheduled_at.isoformat()],
                    id=drill.id,
                    replace_existing=True,
                    # APScheduler wants whole seconds; rounding up never misses a drill early.
                    misfire_grace_time=math.ceil(self._settings.grace),
                )
            elif drill.status is DrillStatus.RUNNING:
                job_id = drill.id + REPORT_SUFFIX
                wanted.add(job_id)
                if job_id not in existing:
                    aps.add_job(
                        jobs.REPORT,
                        "date",
                        run_date=self.report_time(drill),
                        args=[drill.id],
                        id=job_id,
                        # A report is always made, however late.
                        misfire_grace_time=None,
                    )
        self._collect_late(drills, now)
        for job_id in set(existing) - wanted:
            # A job of a drill not read this time is left alone: its drill was not looked at
            # (and firing or reporting checks the drill's status first anyway).
            if full or job_id.removesuffix(REPORT_SUFFIX) in read:
                with contextlib.suppress(Exception):
                    aps.remove_job(job_id)
        if aps.state == STATE_PAUSED:  # the first reconcile after taking the lease
            aps.resume()

    def _collect_late(self, drills: Sequence[Drill], now: datetime) -> None:
        """Start a pass over the reported drills still collecting late acks, unless one runs."""
        previous = self._collecting
        if previous is not None and not previous.done():
            return
        if previous is not None and not previous.cancelled() and previous.exception():
            # A bug: said once, with its traceback, and the next pass runs all the same.
            log.error("drills.late_acks_failed", exc_info=previous.exception())
        due = [d for d in drills if self._runner.collects_late(d, now)]
        if due:
            self._collecting = asyncio.get_running_loop().create_task(
                self._collect(due), name="drills-late-acks"
            )

    async def _collect(self, drills: Sequence[Drill]) -> None:
        for drill in drills:
            try:
                await self._runner.collect_late(drill)
            except StoreUnavailable as exc:
                # The next reconcile's pass tries again.
                log.warning("drills.late_acks_store_down", error=exc.message)
                return

    def report_time(self, drill: Drill) -> datetime:
        # The window runs from the dispatch, a moment after the firing: a second's margin
        # lets the last acks of the window be in before the report reads them.
        fired = drill.fired_at or drill.scheduled_at
        return fired + timedelta(seconds=self._settings.window + 1)

    def schedule_report(self, drill: Drill) -> None:
        """Called by the runner right after it fired a drill on this (leading) instance."""
        if self._aps is not None:
            self._aps.add_job(
                jobs.REPORT,
                "date",
                run_date=self.report_time(drill),
                args=[drill.id],
                id=drill.id + REPORT_SUFFIX,
                replace_existing=True,
                misfire_grace_time=None,
            )

    def report_at(self, drill_id: str, when: datetime) -> None:
        """Report a drill later: its window, counted from its dispatch, is still open."""
        if self._aps is not None:
            self._aps.add_job(
                jobs.REPORT,
                "date",
                run_date=when,
                args=[drill_id],
                id=drill_id + REPORT_SUFFIX,
                replace_existing=True,
                misfire_grace_time=None,
            )

    def why(self, scheduled: datetime, *, missed: bool = False) -> str:
        """Why a drill due at ``scheduled`` runs late (or not at all)."""
        since = self.leader_since
        before = self.previous_heartbeat
        if since is not None and scheduled < since and (before is None or before < scheduled):
            gone = f"from {before.isoformat()}" if before else "before it"
            reason = (
                f"no engine instance was scheduling drills {gone} until {since.isoformat()} "
                f"(the drill was due at {scheduled.isoformat()})"
            )
        else:
            reason = "the scheduler ran it late"
        if missed:
            reason += f"; past the grace of {self._settings.grace:g} s, so it was not run"
        return reason

    def _on_error(self, event: Any) -> None:
        # The job is gone from the store; the next tick's reconcile adds it again.
        self._job_failed = True
        log.warning("drills.job_failed", job=getattr(event, "job_id", None))

    def _on_missed(self, event: Any) -> None:
        if not isinstance(event, JobExecutionEvent) or event.job_id.endswith(REPORT_SUFFIX):
            return
        scheduled = event.scheduled_run_time
        task = asyncio.get_running_loop().create_task(
            self._runner.missed(event.job_id, self.why(scheduled, missed=True))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
