"""The drills as the engine runs them: planning and editing the year, firing a drill as an
exercise alert over the normal dispatch path, reporting it from its acknowledgements, and
answering compliance questions.

Every change goes through ``DrillStore.put`` with the statuses it expects, so two instances
acting on one drill at once (a lease handover, a coordinator's run-now while the scheduler
fires) cannot both apply; the alert of a firing carries the idempotency key
``drill:{id}:{time}``, so it is dispatched once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from dispatcher.core.auth import Office
from dispatcher.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from dispatcher.core.models import Alert, AlertRequest, Channel, Severity, Status, utcnow
from dispatcher.core.regions import Level, RegionTree
from dispatcher.store.store import Store
from drills.compliance import Compliance, compliance
from drills.models import Drill, DrillStatus, Edit, year_problem
from drills.plan import (
    SEARCH_DAYS,
    PlanError,
    check_slot,
    coordinates,
    next_free_slot,
    plan_year,
)
from drills.report import AckEntry, DrillReport, build_report, entry_key
from drills.settings import DrillSettings
from drills.store import DrillStore

log = structlog.get_logger(__name__)

# Late by more than this and the report says why.
LATE_NOTE_SECONDS = 60.0
ENGINE = "engine"
# After its alert expires a terminal no longer plays it, but an ack on its way (a terminal that
# was offline, a queue at the broker) can still come: late acks are collected in the background
# for this long after the expiry; after that, whenever the report is read.
LATE_COLLECT_AFTER_EXPIRY = timedelta(hours=1)
# The alert of a drill expires this long after its window.
EXPIRES_AFTER_WINDOW = 3600
# How often a collector tries again when another wrote the review log between its read and its
# write (each try reads what the other wrote, so a second one normally suffices).
COLLECT_TRIES = 5


class DrillTimeline(Protocol):
    """What the service asks of the drill scheduler (``drills.scheduler.DrillScheduler``)."""

    @property
    def leading(self) -> bool:
        """True while this instance holds the lease and runs the drills' jobs."""
        ...

    def why(self, scheduled: datetime) -> str:
        """Why a drill due at ``scheduled`` ran late."""
        ...

    def schedule_report(self, drill: Drill) -> None:
        """Queue the report of a drill just fired, for when its window closes."""
        ...

    def report_at(self, drill_id: str, when: datetime) -> None:
        """Report a drill at ``when``: its window is still open."""
        ...


class Unscheduled:
    """The timeline of a service with no scheduler (tools, tests): it never leads."""

    leading = False

    def why(self, scheduled: datetime) -> str:
        return "the scheduler ran it late"

    def schedule_report(self, drill: Drill) -> None:
        return None

    def report_at(self, drill_id: str, when: datetime) -> None:
        return None


class DrillService:
    def __init__(
        self,
        store: Store,
        tree: RegionTree,
        settings: DrillSettings,
        *,
        office: Office,
        timeline: DrillTimeline | None = None,
    ) -> None:
        self.engine_store = store
        self.store = DrillStore(store)
        self.tree = tree
        self.settings = settings
        self.office = office
        self.timeline: DrillTimeline = timeline or Unscheduled()
        self.fired = 0

    # Planning and editing ----------------------------------------------------------------

    async def plan(self, year: int, region: str, office: Office) -> tuple[list[Drill], int]:
        """Plan every township under ``region`` that has no drill that year; (new, kept)."""
        # Only what the year's plan depends on, however many other years are stored: the
        # drills of the year, those scheduled in it (the counties' daily caps), and which of
        # the ids it would give are in use (a drill moved into another year keeps its id).
        existing = await self._of_year_and_days(year)
        taken = await self._taken_ids(year, region)
        try:
            new = plan_year(
                self.tree, region, year, self.settings,
                existing=existing, taken_ids=taken, now=utcnow(),
            )  # fmt: skip
        except PlanError as exc:
            raise ValidationFailed(
                str(exc), details=[{"field": "year", "message": str(exc)}]
            ) from exc
        now = utcnow()
        stored: list[Drill] = []
        for drill in new:
            edit = Edit(at=now, office=office.id, action="planned", reason=f"plan of {year}",
                        after=drill.scheduled_at)  # fmt: skip
            if await self.store.put(drill, edit):
                stored.append(drill)
            else:
                # Planned meanwhile by another request: it is there, not twice.
                log.warning("drills.plan_conflict", drill_id=drill.id)
        kept = sum(
            1
            for d in existing
            if d.year == year and d.status is not DrillStatus.CANCELLED
            and self.tree.is_within(d.township, region)
        )  # fmt: skip
        log.info("drills.planned", year=year, region=region, new=len(stored), kept=kept)
        return stored, kept

    async def add(self, township: str, when: datetime, reason: str, office: Office) -> Drill:
        region = self.tree.get(township)
        if region.level is not Level.TOWNSHIP:
            raise ValidationFailed(
                f"{township} is a {region.level.name.lower()}: drills are per township",
                details=[{"field": "township", "message": "not a township"}],
            )
        await self._check(when, township)
        drill = self._new_drill(township, when, origin=f"added: {reason}")
        drill = await self._unique(drill)
        await self.store.put(
            drill,
            Edit(at=utcnow(), office=office.id, action="added", reason=reason, after=when),
        )
        return drill

    async def move(self, drill_id: str, when: datetime, reason: str, office: Office) -> Drill:
        drill = await self._planned(drill_id, "moves")
        await self._check(when, drill.township, ignore=drill.id)
        moved = drill.model_copy(update={"scheduled_at": when, "year": self._year(when)})
        edit = Edit(
            at=utcnow(), office=office.id, action="moved", reason=reason,
            before=drill.scheduled_at, after=when,
        )  # fmt: skip
        return await self._put_planned(moved, edit)

    async def cancel(self, drill_id: str, reason: str, office: Office) -> Drill:
        drill = await self._planned(drill_id, "cancels")
        cancelled = drill.model_copy(update={"status": DrillStatus.CANCELLED})
        edit = Edit(at=utcnow(), office=office.id, action="cancelled", reason=reason)
        return await self._put_planned(cancelled, edit)

    async def run_now(self, drill_id: str, reason: str, office: Office) -> Drill:
        """Fire a planned drill now, on this instance (a coordinator's decision)."""
        drill = await self._planned(drill_id, "runs")
        now = utcnow()
        if not coordinates(office.id, office.region, self.settings):
            # A county office runs its drills by hand only in a slot the drill rules allow:
            # a working day, working hours, its county's daily cap and no overlap.
            county = await self._county_around(drill.township, now, now)
            try:
                check_slot(now, drill.township, self.settings, county, ignore=drill.id)
            except PlanError as exc:
                raise Forbidden(
                    f"office {office.id} may run drill {drill_id} now only within the drill "
                    f"rules, and now breaks them: {exc}. Move the drill to an allowed time, "
                    "or ask the city or province office to run it",
                    region_codes=[drill.township],
                ) from exc
        fired = await self._fire(drill, now, manual=f"run now by {office.id}: {reason}")
        if fired is None:
            raise Conflict(f"drill {drill_id} was fired or changed meanwhile")
        return fired

    async def _planned(self, drill_id: str, verb: str) -> Drill:
        drill = await self._get(drill_id)
        if drill.status is not DrillStatus.PLANNED:
            raise Conflict(f"drill {drill_id} is {drill.status.value}; only a planned one {verb}")
        return drill

    async def _put_planned(self, drill: Drill, edit: Edit) -> Drill:
        """Store an edit of a drill that was planned when read, unless it changed since."""
        if not await self.store.put(drill, edit, expect=[DrillStatus.PLANNED]):
            raise Conflict(f"drill {drill.id} changed meanwhile; look at it again")
        return drill

    async def _check(self, when: datetime, township: str, ignore: str | None = None) -> None:
        # The year check first: the window below converts ``when``, which must not overflow.
        problem = year_problem(when)
        if problem is not None:
            raise ValidationFailed(problem, details=[{"field": "at", "message": problem}])
        county = await self._county_around(township, when, when)
        try:
            check_slot(when, township, self.settings, county, ignore=ignore, now=utcnow())
        except PlanError as exc:
            raise ValidationFailed(
                str(exc), details=[{"field": "at", "message": str(exc)}]
            ) from exc

    # Firing and reporting (APScheduler jobs call these) ------------------------------------

    async def fire(self, drill_id: str, scheduled: str) -> None:
        with structlog.contextvars.bound_contextvars(drill_id=drill_id):
            drill = await self.store.get(drill_id)
            if drill is None:
                log.error("drill.unknown")
                return
            if drill.status is not DrillStatus.PLANNED:
                log.info("drill.not_fired", status=drill.status.value)
                return
            if drill.scheduled_at.isoformat() != scheduled:
                # A stale job of a drill moved since: its new job fires it.
                log.info("drill.stale_job", scheduled=scheduled)
                return
            await self._fire(drill, datetime.fromisoformat(scheduled))

    async def _fire(
        self, drill: Drill, due: datetime, *, manual: str | None = None
    ) -> Drill | None:
        """Claim the drill (planned → running, with its dispatch key), then dispatch it. The
        claim comes first so that a scheduled firing, a run-now and an edit racing each other
        cannot each send an alert: only the one whose claim applied dispatches."""
        now = utcnow()
        late_by = max(0.0, (now - due).total_seconds())
        late_reason = None
        if manual is None and late_by > LATE_NOTE_SECONDS:
            late_reason = self.timeline.why(due)
        reason = manual or (
            f"due; late by {late_by:.0f} s: {late_reason}" if late_reason else "due"
        )
        claimed = drill.model_copy(
            update={
                "status": DrillStatus.RUNNING,
                "fired_at": now,
                "fire_key": self._fire_key(drill, due),
                "late_by": late_by if manual is None else None,
                "late_reason": late_reason,
            }
        )
        edit = Edit(
            at=now,
            office=manual.split(":")[0].removeprefix("run now by ") if manual else ENGINE,
            action="fired",
            reason=reason[:300],
        )
        if not await self.store.put(claimed, edit, expect=[DrillStatus.PLANNED]):
            log.info("drill.fired_elsewhere")
            return None
        self.fired += 1
        dispatched = await self.dispatch(claimed)
        self.timeline.schedule_report(dispatched)
        return dispatched

    async def dispatch(self, drill: Drill) -> Drill:
        """Store and queue a claimed drill's alert (again, after a crash: the same one)."""
        assert drill.fire_key is not None  # noqa: S101  set by the claim
        assert drill.fired_at is not None  # noqa: S101  set by the claim
        alert = self._alert(drill, drill.fired_at)
        stored, created = await self.engine_store.create_alert(
            alert, office_id=self.office.id, idempotency=(drill.fire_key, _digest(drill.fire_key))
        )
        with_alert = drill.model_copy(update={"alert_id": stored.id})
        await self.store.put(with_alert, None, expect=[DrillStatus.RUNNING])
        log.info(
            "drill.fired",
            alert_id=stored.id,
            township=drill.township,
            new_alert=created,
            late_by=None if drill.late_by is None else round(drill.late_by, 1),
            late_reason=drill.late_reason,
        )
        return with_alert

    async def resume(self, drill_id: str) -> None:
        """Finish a drill claimed by an instance that died before dispatching it."""
        drill = await self.store.get(drill_id)
        if drill is not None and drill.status is DrillStatus.RUNNING and drill.alert_id is None:
            log.warning("drill.dispatch_resumed", drill_id=drill_id)
            await self.dispatch(drill)

    @staticmethod
    def _fire_key(drill: Drill, due: datetime) -> str:
        return f"drill:{drill.id}:{due.isoformat()}"

    def _alert(self, drill: Drill, now: datetime) -> Alert:
        name = drill.township_name
        request = AlertRequest(
            event=self.settings.event,
            severity=Severity(self.settings.severity),
            headline=f"{name}应急广播综合演练",
            text=f"这是{name}应急广播系统年度综合演练，不是真实预警。",
            instruction="请各村应急广播终端正常播放并确认，群众无需惊慌。",
            areas=[drill.township],
            channels=[Channel.LOUDSPEAKER],
            expires_in=int(self.settings.window) + EXPIRES_AFTER_WINDOW,
            status=Status.EXERCISE,
        )
        return Alert.issue(
            request,
            office_id=self.office.id,
            office_name=self.office.name,
            areas=self.tree.cover([drill.township]),
            sent=now,
        )

    async def report(self, drill_id: str) -> None:
        with structlog.contextvars.bound_contextvars(drill_id=drill_id):
            drill = await self.store.get(drill_id)
            if drill is None or drill.status is not DrillStatus.RUNNING or drill.alert_id is None:
                return
            window_end = await self._window_end(drill)
            if window_end is None or utcnow() < window_end:
                # Not dispatched yet, or its window (from the dispatch) is still open.
                later = (window_end or utcnow() + timedelta(seconds=5)) + timedelta(seconds=1)
                self.timeline.report_at(drill.id, later)
                return
            made = await self.make_report(drill)
            status = DrillStatus.PASSED if made.passed else DrillStatus.FAILED
            now = utcnow()
            reported = drill.model_copy(
                update={"status": status, "coverage": made.coverage, "reported_at": now}
            )
            edit = Edit(
                at=now, office=ENGINE, action="reported",
                reason=f"coverage {made.coverage:.1%}: {status.value}",
            )  # fmt: skip
            if not await self.store.put(reported, edit, expect=[DrillStatus.RUNNING]):
                return
            log.info(
                "drill.reported",
                alert_id=drill.alert_id,
                status=status.value,
                coverage=round(made.coverage, 4),
                expected=made.expected,
                played=made.played,
                missing=made.missing,
            )
            if status is DrillStatus.FAILED:
                await self._redrill(reported)

    async def _window_end(self, drill: Drill) -> datetime | None:
        if drill.alert_id is None:
            return None
        dispatched = (await self.engine_store.dispatch_state(drill.alert_id)).get("dispatched_at")
        if dispatched is None:
            return None
        return datetime.fromisoformat(dispatched) + timedelta(seconds=self.settings.window)

    async def make_report(self, drill: Drill) -> DrillReport:
        """Build and store a drill's first report from its alert's acknowledgements; the one
        already stored when there is one (the first verdict given stands)."""
        assert drill.alert_id is not None  # noqa: S101  only running drills are reported
        dispatch = await self.engine_store.dispatch_state(drill.alert_id)
        dispatched = dispatch.get("dispatched_at")
        dispatched_at = datetime.fromisoformat(dispatched) if dispatched else drill.fired_at
        assert dispatched_at is not None  # noqa: S101  a running drill was fired
        dispatched_ms = int(dispatched_at.timestamp() * 1000)
        window_end_ms = dispatched_ms + int(self.settings.window * 1000)
        expected, offline = await self.engine_store.expected_of(drill.alert_id)
        entries = await self.engine_store.acks_since(drill.alert_id, dispatched_ms - 60_000)
        made = build_report(
            drill=drill,
            expected=expected,
            offline=offline,
            acks=_ack_entries(entries),
            dispatched_ms=dispatched_ms,
            window_end_ms=window_end_ms,
            late_after=self.settings.late_after,
            pass_coverage=self.settings.pass_coverage,
            tree=self.tree,
            # Whatever the log gets after what was read here is late, even at an in-window
            # time (an instance whose batches lagged): the verdict is given on what was read.
            on_time_through=_last_id(entries) or NOTHING_READ,
        )
        # Each entry of the review log says whether it is late, so a review of many drills
        # reads their logs and not their reports.
        marked = [{**e, "late": LATE if int(e["recorded_ms"]) > window_end_ms else ON_TIME}
                  for e in entries]  # fmt: skip
        kept = await self.store.first_report(drill.id, made.model_dump_json(), marked)
        return made if kept is None else DrillReport.model_validate_json(kept)

    async def collect_late(self, drill: Drill) -> DrillReport | None:
        """Append to a reported drill's review log the acks its alert got since (every entry of
        the engine's ack log once) and make its report again with them as late acks; the
        report, or None when the drill has none yet. The verdict and its figures stay."""
        if drill.alert_id is None:
            return None
        for _ in range(COLLECT_TRIES):
            raw, rows = await self.store.review(drill.id)
            if raw is None:
                return None
            report = DrillReport.model_validate_json(raw)
            # A report stored before late acks were kept read exactly the rows it kept.
            cut = report.on_time_through or _last_id(rows) or NOTHING_READ
            through = _last_id(rows) or cut
            since_ms = max(entry_key(through)[0], int(report.dispatched_at.timestamp() * 1000))
            # After the cut every entry is late, whatever its time.
            fresh = [
                {**e, "late": LATE}
                for e in await self.engine_store.acks_since(drill.alert_id, since_ms - 60_000)
                if entry_key(e["id"]) > entry_key(through)
            ]
            if not fresh:
                return report
            made = build_report(
                drill=drill,
                expected={t.terminal: t.village for t in report.terminals},
                offline={t.terminal for t in report.terminals if t.offline},
                acks=_ack_entries([*rows, *fresh]),
                dispatched_ms=int(report.dispatched_at.timestamp() * 1000),
                window_end_ms=int(report.window_end.timestamp() * 1000),
                late_after=report.late_after,
                pass_coverage=report.pass_coverage,
                tree=self.tree,
                on_time_through=cut,
            )
            if await self.store.append_review(drill.id, len(rows), made.model_dump_json(), fresh):
                log.info(
                    "drill.late_acks",
                    drill_id=drill.id,
                    new=len(fresh),
                    late_acks=len(made.late_acks),
                    played_with_late=made.played_with_late,
                )
                return made
        log.warning("drill.late_acks_contended", drill_id=drill.id)
        return report

    def collects_late(self, drill: Drill, now: datetime) -> bool:
        """Whether the scheduler still collects ``drill``'s late acks in the background."""
        if drill.status not in (DrillStatus.PASSED, DrillStatus.FAILED) or drill.fired_at is None:
            return False
        expiry = drill.fired_at + timedelta(seconds=self.settings.window + EXPIRES_AFTER_WINDOW)
        return now < expiry + LATE_COLLECT_AFTER_EXPIRY

    async def collect_late_of(self, drill_id: str) -> None:
        """The scheduler's background collection of one drill's late acks."""
        drill = await self.store.get(drill_id)
        if drill is not None:
            await self.collect_late(drill)

    async def live_acks(self, drill: Drill) -> list[dict[str, Any]]:
        """The acks of a drill still collecting them, from the engine's ack log."""
        if drill.alert_id is None or drill.fired_at is None:
            return []
        since_ms = int(drill.fired_at.timestamp() * 1000) - 60_000
        return await self.engine_store.acks_since(drill.alert_id, since_ms)

    async def ensure_redrill(self, drill_id: str) -> None:
        """Plan the re-drill of a failed drill that has none (its planning was cut short)."""
        failed = await self.store.get(drill_id)
        if failed is None or failed.status is not DrillStatus.FAILED:
            return
        if any(d.redrill_of == drill_id for d in await self.store.of_township(failed.township)):
            return
        await self._redrill(failed)

    async def _redrill(self, failed: Drill) -> None:
        after = (failed.fired_at or failed.scheduled_at) + timedelta(
            days=self.settings.redrill_after_days
        )
        county = await self._county_around(
            failed.township, after, after + timedelta(days=SEARCH_DAYS + 1)
        )
        try:
            when = next_free_slot(after, failed.township, self.settings, county)
        except PlanError as exc:
            log.error("drill.no_redrill_slot", drill_id=failed.id, error=str(exc))
            return
        reason = f"re-drill of {failed.id}: coverage {failed.coverage or 0:.1%} below " \
            f"{self.settings.pass_coverage:.0%}"  # fmt: skip
        drill = self._new_drill(failed.township, when, origin=reason)
        # It settles the failed drill's year, even when it falls in the next one.
        drill = await self._unique(
            drill.model_copy(
                update={
                    "redrill_of": failed.id,
                    "year": failed.year,
                    "id": f"drill-{failed.year}-{failed.township}",
                }
            )
        )
        await self.store.put(
            drill, Edit(at=utcnow(), office=ENGINE, action="re-drill", reason=reason, after=when)
        )
        log.info(
            "drill.redrill_planned", drill_id=drill.id, redrill_of=failed.id, at=when.isoformat()
        )

    async def missed(self, drill_id: str, reason: str) -> None:
        drill = await self.store.get(drill_id)
        if drill is None or drill.status is not DrillStatus.PLANNED:
            return
        missed = drill.model_copy(update={"status": DrillStatus.MISSED, "missed_reason": reason})
        edit = Edit(at=utcnow(), office=ENGINE, action="missed", reason=reason[:300])
        if await self.store.put(missed, edit, expect=[DrillStatus.PLANNED]):
            log.error("drill.missed", drill_id=drill_id, township=drill.township, reason=reason)

    # Questions ---------------------------------------------------------------------------

    async def compliance(self, year: int, region: str) -> Compliance:
        # Which villages have a terminal, from the registry as it is now: the gap to close.
        reached = await self.store.with_terminals(self.tree.villages(region))
        return compliance(self.tree, region, year, await self.store.of_year(year), reached=reached)

    async def list(
        self, *, year: int | None, region: str, status: str | None = None
    ) -> list[Drill]:
        drills = await self.store.all() if year is None else await self.store.of_year(year)
        if year is not None:
            drills.sort(key=lambda d: (d.scheduled_at, d.id))
        return [
            d
            for d in drills
            if (year is None or d.year == year)
            and self.tree.is_within(d.township, region)
            and (status is None or d.status.value == status)
        ]

    # --------------------------------------------------------------------------------------

    async def _of_year_and_days(self, year: int) -> Sequence[Drill]:
        """The drills of ``year`` and those scheduled in it, in the drill timezone."""
        tz = self.settings.tz
        start = datetime(year, 1, 1, tzinfo=tz)
        end = datetime(year + 1, 1, 1, tzinfo=tz)
        found = {d.id: d for d in await self.store.of_year(year)}
        for drill in await self.store.between(_ms(start), _ms(end)):
            found.setdefault(drill.id, drill)
        return list(found.values())

    async def _taken_ids(self, year: int, region: str) -> set[str]:
        """The ids a plan of ``year`` under ``region`` might give that are in use: each
        township's ``drill-YEAR-CODE``, then ``…-2``, ``…-3`` while those are taken."""
        towns = self.tree.townships(region)  # none for a village: plan_year says why
        taken: set[str] = set()
        asked = {f"drill-{year}-{t.code}": f"drill-{year}-{t.code}" for t in towns}
        n = 1
        while asked:
            hits = await self.store.taken(list(asked))
            taken |= hits
            n += 1
            asked = {f"{base}-{n}": base for drill_id, base in asked.items() if drill_id in hits}
        return taken

    async def _county_around(
        self, township: str, first: datetime, last: datetime
    ) -> Sequence[Drill]:
        """The drills of ``township``'s county that a slot check from ``first`` to ``last``
        can meet: those scheduled from the day before ``first`` to the day after ``last``."""
        drills = await self.store.between(
            _ms(first - timedelta(days=1)), _ms(last + timedelta(days=1))
        )
        return [d for d in drills if d.county == township[:6]]

    async def _get(self, drill_id: str) -> Drill:
        drill = await self.store.get(drill_id)
        if drill is None:
            raise NotFound(f"no drill {drill_id!r}")
        return drill

    def _year(self, when: datetime) -> int:
        return when.astimezone(self.settings.tz).year

    def _new_drill(self, township: str, when: datetime, *, origin: str) -> Drill:
        path = {r.level: r for r in self.tree.path(township)}
        return Drill(
            id=f"drill-{self._year(when)}-{township}",
            year=self._year(when),
            township=township,
            township_name=path[Level.TOWNSHIP].name,
            county=path[Level.COUNTY].code,
            county_name=path[Level.COUNTY].name,
            city=path[Level.CITY].code,
            city_name=path[Level.CITY].name,
            scheduled_at=when,
            origin=origin,
        )

    async def _unique(self, drill: Drill) -> Drill:
        """The drill with the next free id of its township and year (…-2, …-3)."""
        taken = {d.id for d in await self.store.of_township(drill.township)}
        candidate, n = drill.id, 1
        while candidate in taken:
            n += 1
            candidate = f"{drill.id}-{n}"
        return drill.model_copy(update={"id": candidate})


# The cut of a first report that read no ack: every ack logged later is late.
NOTHING_READ = "0-0"
# The mark of a review log entry (a string, as the ack log's own fields).
LATE, ON_TIME = "1", "0"


def _last_id(rows: Sequence[dict[str, Any]]) -> str | None:
    """The id of the latest ack log entry among ``rows`` (None for none, or rows of a log
    written before entries had ids)."""
    ids = [str(r["id"]) for r in rows if r.get("id")]
    return max(ids, key=entry_key) if ids else None


def _ack_entries(rows: Sequence[dict[str, Any]]) -> list[AckEntry]:
    return [
        AckEntry(
            terminal=e["terminal_id"],
            state=e["state"],
            recorded_ms=int(e["recorded_ms"]),
            result=int(e["result"]),
            region=str(e.get("region") or ""),
            entry_id=str(e.get("id") or ""),
        )
        for e in rows
    ]


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _digest(key: str) -> str:
    """The idempotency record's body: the key itself stands for the request."""
    return hashlib.sha256(key.encode()).hexdigest()
