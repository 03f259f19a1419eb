"""Turns an alert (or an escalation) into an SMS job: who is texted, with which text.

Planning is idempotent: the dispatch worker may plan an alert again after a crash, and only
recipients not queued before are added. A person (one phone number) gets one message per job
however many postings put them inside the alert's areas.

People who cannot hear the loudspeaker (``needs`` with ``text``) are texted every alert of
their area: one that goes to loudspeakers only is planned too, for them alone, and one with
``sms_roles`` reaches them whatever their role.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import structlog

from adapters.sms.recipients import NEEDS_TEXT, Person, Role, persons_in
from adapters.sms.settings import SmsSettings
from adapters.sms.store import Lane, SmsStore
from adapters.sms.text import SmsText, compose
from dispatcher.core.errors import RegionError
from dispatcher.core.models import Alert, Channel, MsgType, Severity, Status
from dispatcher.core.regions import RegionTree, code_path

log = structlog.get_logger(__name__)

# States of a job's recipients that may have reached the phone: a cancel goes to them.
REACHED = frozenset({"submitting", "unknown", "submitted", "delivered"})
ESCALATION_SUFFIX = ".esc"
# Recipients read, filtered and queued at a time: small enough that the SMS worker's requests
# (on the same event loop and Redis) are not held up while a province is planned.
PAGE = 1000


def escalation_job(alert_id: str) -> str:
    return alert_id + ESCALATION_SUFFIX


def lane_of(alert: Alert) -> Lane:
    """Actual red and orange warnings (and their updates, cancels and escalation texts) are
    texted before anything else: a drill of a whole province must not hold them up."""
    if alert.status is Status.ACTUAL and alert.severity in (Severity.RED, Severity.ORANGE):
        return Lane.URGENT
    return Lane.ROUTINE


class SmsPlanner:
    def __init__(
        self,
        store: SmsStore,
        tree: RegionTree,
        settings: SmsSettings,
        signatures: Mapping[str, str],
    ) -> None:
        self._store = store
        self._tree = tree
        self._settings = settings
        self._signatures = dict(signatures)

    def signature(self, alert: Alert) -> str:
        return self._signatures.get(alert.sender, alert.sender_name)

    def texts(self, alert: Alert, custom: str | None = None) -> dict[str, SmsText]:
        """The alert's SMS text in each language."""
        return {
            lang: compose(
                signature=self.signature(alert),
                headline=alert.headline,
                text=alert.text,
                instruction=alert.instruction,
                status=alert.status.value,
                msg_type=alert.msg_type.value,
                lang=lang,
                custom=custom if custom is not None else alert.sms_text,
                max_segments=self._settings.max_segments,
            )
            for lang in ("zh", "en")
        }

    async def plan_alert(self, alert: Alert) -> int:
        """Queue the alert's texts; for an update or cancel, first stop what the alerts it
        replaces still had queued. Returns how many recipients were added now.

        An alert without ``sms`` in its channels is texted only to the people who cannot hear
        the loudspeaker; when there are none, no job is made (its status shows no SMS)."""
        hearing_only = Channel.SMS not in alert.channels
        for ref in alert.references:
            reason = (
                f"cancelled by {alert.id}"
                if alert.msg_type is MsgType.CANCEL
                else f"superseded by {alert.id}"
            )
            await self.close(ref, to_state="cancelled", reason=reason)
        variants: dict[str, SmsText] = dict(self.texts(alert))
        if alert.msg_type is MsgType.CANCEL:
            # Only people who may have got the warning need to hear it is over.
            reached = await self._reached(alert.references)
            if hearing_only and not reached:
                return 0
            return await self._plan(alert, alert.id, "alert", variants, reached)
        if not hearing_only:
            await self._describe(alert, alert.id, "alert", variants)
        described = not hearing_only
        # Page by page: the first texts leave while the rest of a province is still being
        # read, and the event loop is never held for long.
        areas = frozenset(alert.areas)
        roles = frozenset(alert.sms_roles) if alert.sms_roles else None
        keys = await self._store.person_keys_below(list(alert.areas))
        added = total = 0
        for start in range(0, len(keys), PAGE):
            rows = await self._store.persons(keys[start : start + PAGE])
            targets = [
                t for key, raw in rows if (t := _target(key, raw, areas, roles, hearing_only))
            ]
            if targets and not described:
                await self._describe(alert, alert.id, "alert", variants)
                described = True
            added += await self._queue(alert, alert.id, variants, targets)
            total += len(targets)
        if described:
            self._planned(alert, alert.id, "alert", variants, total, added)
        return added

    async def plan_escalation(self, alert: Alert, records: Sequence[dict[str, str]]) -> int:
        """Text the contacts of villages whose terminals failed their last resend. For drills
        and tests only duty officers hear of it, never the public."""
        villages = sorted({r["region"] for r in records if r.get("region") in self._tree})
        if not villages:
            return 0
        drill = alert.status is not Status.ACTUAL
        roles = self._settings.exercise_roles if drill else self._settings.escalation_roles
        # A drill's duty officers sit at the township; a warning's contacts in the village.
        places = sorted({v[:9] for v in villages}) if drill else villages
        persons = await self._persons(places, roles)
        variants: dict[str, SmsText] = {}
        targets: list[tuple[str, str, str]] = []
        for person in persons:
            mine = [
                place
                for place in places
                # By prefix: a posting whose village left the tree still lies in its township.
                if any(p.region.startswith(place) for p in person.postings)
            ]
            if drill:
                # The officer's township: name the villages below it that failed.
                mine = [v for v in villages if any(v.startswith(t) for t in mine)]
            lang = person.language
            variant = f"{lang}:{_digest(mine)}"
            if variant not in variants:
                variants[variant] = compose(
                    signature=self.signature(alert),
                    headline=alert.headline,
                    text=alert.text,
                    instruction=None,
                    status=alert.status.value,
                    msg_type="alert",
                    lang=lang,
                    custom=self._escalation_text(alert, mine, lang),
                    max_segments=self._settings.max_segments,
                )
            targets.append((person.key, person.phone, variant))
        return await self._plan(alert, escalation_job(alert.id), "escalation", variants, targets)

    def _escalation_text(self, alert: Alert, villages: Sequence[str], lang: str) -> str:
        names = [self._village_name(v) for v in villages[:3]]
        more = len(villages) - len(names)
        if lang == "en":
            where = ", ".join(names) + (f" and {more} more villages" if more else "")
            return (
                f"Not confirmed: the broadcast loudspeakers of {where} did not confirm "
                f"the warning '{alert.headline}'. Warn people there directly now."
            )
        where = "、".join(names) + (f"等{len(villages)}个村" if more else "")
        return f"预警未送达：{where}的应急广播终端未确认收到“{alert.headline}”，请立即通知群众。"

    def _village_name(self, code: str) -> str:
        path = self._tree.path(code) if code in self._tree else []
        # Township and village: enough to find it, short enough for a text.
        return "".join(r.name for r in path[-2:]) or code

    async def close(self, job: str, *, to_state: str, reason: str) -> int:
        """Stop a job: its queued recipients become ``to_state``; in-flight ones go on."""
        meta = await self._store.job(job)
        if not meta:
            return 0
        await self._store.set_job(job, closed=reason)
        closed = await self._store.close_job(job, to_state=to_state, reason=reason)
        if closed:
            log.info("sms.job_closed", job=job, recipients=closed, reason=reason)
        return closed

    async def _persons(self, areas: Sequence[str], roles: Iterable[str] | None) -> list[Person]:
        raws = await self._store.persons_below(list(areas))
        persons = [Person.from_json(raw) for raw in raws]
        wanted = [Role(r) for r in roles] if roles else None
        return persons_in(persons, list(areas), self._tree, roles=wanted)

    async def _reached(self, jobs: Sequence[str]) -> list[tuple[str, str, str]]:
        out: dict[str, tuple[str, str, str]] = {}
        for job in jobs:
            for pending in await self._store.all_recipients(job):
                if pending.state in REACHED:
                    lang = str(pending.info.get("v", "zh")).partition(":")[0]
                    out[pending.key] = (pending.key, str(pending.info["phone"]), lang)
        return list(out.values())

    async def _plan(
        self,
        alert: Alert,
        job: str,
        kind: str,
        variants: dict[str, SmsText],
        targets: Sequence[tuple[str, str, str]],
    ) -> int:
        await self._describe(alert, job, kind, variants)
        added = await self._queue(alert, job, variants, targets)
        self._planned(alert, job, kind, variants, len(targets), added)
        return added

    async def _describe(
        self, alert: Alert, job: str, kind: str, variants: dict[str, SmsText]
    ) -> None:
        meta: dict[str, str | int] = {
            "alert_id": alert.id,
            "kind": kind,
            "office": alert.sender,
            "expires_ms": int(alert.expires.timestamp() * 1000),
            # A red warning or a cancel must reach people whatever they were sent this hour.
            "exempt": int(alert.severity is Severity.RED or alert.msg_type is MsgType.CANCEL),
            "signature": self.signature(alert),
            "lane": int(lane_of(alert)),
        }
        for name, text in variants.items():
            meta[f"{name}.body"] = text.body
            meta[f"{name}.text"] = text.text
            meta[f"{name}.segments"] = text.segmentation.segments
            meta[f"{name}.encoding"] = text.segmentation.encoding.value
            meta[f"{name}.truncated"] = int(text.truncated)
        await self._store.set_job(job, **meta)

    async def _queue(
        self,
        alert: Alert,
        job: str,
        variants: dict[str, SmsText],
        targets: Sequence[tuple[str, str, str]],
    ) -> int:
        recipients: list[tuple[str, dict[str, Any]]] = [
            (key, {"phone": phone, "v": v, "segments": variants[v].segmentation.segments})
            for key, phone, v in targets
        ]
        return await self._store.plan(job, recipients, lane=lane_of(alert))

    @staticmethod
    def _planned(
        alert: Alert, job: str, kind: str, variants: dict[str, SmsText], total: int, added: int
    ) -> None:
        log.info(
            "sms.planned",
            alert_id=alert.id,
            job=job,
            kind=kind,
            recipients=total,
            added=added,
            segments={n: t.segmentation.segments for n, t in variants.items()},
        )


def _target(
    key: str,
    raw: str,
    areas: frozenset[str],
    roles: frozenset[str] | None,
    hearing_only: bool = False,
) -> tuple[str, str, str] | None:
    """(key, phone, language) of a stored person with a posting inside ``areas`` (and of one
    of ``roles``, unless they cannot hear the loudspeaker), else None; with ``hearing_only``
    only people who cannot hear it. Reads the stored JSON directly: decoding 100,000
    ``Person`` objects would cost a second of the event loop for a province-wide alert."""
    person = json.loads(raw)
    if NEEDS_TEXT in person.get("needs", ()):
        # Any posting of theirs in the areas: the roles choose who must act, not who hears.
        roles = None
    elif hearing_only:
        return None
    for region, role in person.get("postings", ()):
        if roles is not None and role not in roles:
            continue
        try:
            path = code_path(region)
        except RegionError:
            continue
        if any(code in areas for code in path):
            languages = person.get("languages") or ["zh"]
            lang = languages[0] if languages[0] in ("zh", "en") else "zh"
            return key, str(person["phone"]), lang
    return None


def _digest(codes: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(codes)).encode()).hexdigest()[:10]
