"""What a terminal does with each message it gets: pure decisions, no I/O, no clock.

``TerminalBrain.handle(topic, payload, now)`` turns one incoming MQTT message into a list of
actions (``Ack`` to publish, ``Play`` / ``Stop`` to perform, ``Dropped`` to log); the caller
reports back with ``begin`` when playback starts and ``finished`` when it ends. The field agent
(``receiver.agent``) and every virtual terminal of the simulator (``receiver.simulator``) run
this same class, so the rules below hold for both:

- An alert id is handled once, however often and by however many topics it arrives. A
  re-delivery is answered by repeating the latest ack (``Ack.repeated``), never by playing again:
  the broker may have lost the first ack, and the engine resends on the terminal's cmd topic.
- An expired alert is never played; it is acked ``failed`` with detail ``expired``.
- ``cancel`` stops the alerts it references; ``update`` stops them and plays itself. A stopped
  (or never started) alert is acked ``failed`` with detail ``cancelled`` or ``superseded``
  (national state 5, cancelled). Order is by ``sent``, not arrival: an update or cancel older
  than the one already in force is stale; it changes nothing and is acked ``failed`` with detail
  ``superseded``.
- A cancel is announced (``【解除】…已解除``, see ``receiver.speech``) once it has stopped what it
  references: acked ``received``, then played like an alert, so ``played`` means the village
  heard that the warning is lifted.
- ``status: exercise`` is announced with the prefix 演练. ``status: test`` is a link test: acked
  ``received`` then ``played`` (detail ``test``) without sounding and without touching anything
  else.
- A payload that fails validation is dropped with a reason and never acked: nothing in it can be
  trusted, not even its id. So is an alert whose ``areas`` do not include the terminal's region.
- Catching up (``start_catch_up``, after a connect whose session the broker kept): the
  messages queued while the terminal was away arrive in one burst, oldest first. Their
  ``Play`` actions are held until the burst settles (``catch_up_due``: ``catch_up_quiet``
  without a message, at most ``catch_up_max`` after the connect), then ``end_catch_up``
  releases what is still in force: an alert superseded or cancelled later in the burst, or
  expired by then, never sounds; each chain plays its newest version once. A cancel met there
  whose warning this terminal never sounded has nothing to lift: acked ``received`` then
  ``played`` with detail ``silent``, not announced. Acks are never held.
- Every message, commands included, is a signed JWS (``dispatcher.core.signing``) and is
  verified before anything else is read: one that is unsigned, wrongly signed, signed by an
  unknown or retired key, or whose ``sent`` lies more than ``max_age`` in the past or more than
  ``skew`` in the future (a replay) is refused: a ``Rejected`` action (a ``Dropped`` the caller
  also reports on the terminal's state topic), never acked and never played. A brain without a
  keyring (``verify`` None) refuses everything.

Memory is bounded: an id is remembered until its alert expires plus ``retain_after_expiry`` (so
a late resend still gets the true ack), and never more than ``max_records`` ids at once.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from dispatcher.core.signing import SignatureRejected
from dispatcher.core.wire import (
    ALERT_ID,
    DETAIL_CANCELLED,
    DETAIL_EXPIRED,
    DETAIL_SILENT,
    DETAIL_SUPERSEDED,
    DETAIL_TEST,
    MAX_PAYLOAD,
    MSG_TYPES,
    REGION_CODE,
    STATUSES,
    ack_topic,
    cmd_topic,
    state_topic,
    terminal_topics,
)
from receiver.speech import is_english, lifted, speakable

__all__ = [
    "MAX_PAYLOAD",
    "SEVERITY_ZH",
    "Ack",
    "AckState",
    "Action",
    "Alert",
    "Audio",
    "Dropped",
    "MalformedAlert",
    "Play",
    "Rejected",
    "Stop",
    "TerminalBrain",
    "Verifier",
    "ack_topic",
    "cmd_topic",
    "parse_alert",
    "render_announcement",
    "state_payload",
    "state_topic",
    "terminal_topics",
]

AckState = Literal["received", "playing", "played", "failed"]
MsgType = Literal["alert", "update", "cancel"]
Status = Literal["actual", "exercise", "test"]
Severity = Literal["red", "orange", "yellow", "blue"]

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
MAX_REPEAT: Final = 10

SEVERITY_ZH: Final[dict[str, str]] = {
    "red": "红色预警",
    "orange": "橙色预警",
    "yellow": "黄色预警",
    "blue": "蓝色预警",
}
SEVERITY_EN: Final[dict[str, str]] = {
    "red": "Red warning",
    "orange": "Orange warning",
    "yellow": "Yellow warning",
    "blue": "Blue warning",
}
EXERCISE_PREFIX: Final = "演练"


def state_payload(
    state: Literal["online", "offline"],
    region: str,
    firmware: str,
    at: datetime | None,
    *,
    rejected: Rejected | None = None,
    session: Literal["new", "resumed"] | None = None,
) -> bytes:
    """The retained ``eb/v1/term/{id}/state`` payload. The Last Will has no ``at``: it is
    written at connect time, and the broker publishes it whenever the link dies. With
    ``rejected`` it is the report of a refused message, which is published not retained, so the
    retained state stays the plain one. ``session``, in an online state: whether the broker
    kept this terminal's session (CONNACK's session present), so the engine knows whether the
    alerts in force must be sent again (docs/protocol.md, "Reconnecting")."""
    body: dict[str, Any] = {"v": 1, "state": state, "region": region, "firmware": firmware}
    if at is not None:
        body["at"] = _iso(at)
    if session is not None:
        body["session"] = session
    if rejected is not None:
        body["rejected"] = {
            "reason": rejected.reason,
            "kid": rejected.kid,
            "topic": rejected.topic,
            "alert_id": rejected.alert_id,
            "at": _iso(rejected.at),
        }
    return _dumps(body)


class MalformedAlert(ValueError):
    """A payload that is not a valid v1 alert; ``reason`` says why, ``alert_id`` if readable."""

    def __init__(self, reason: str, alert_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.alert_id = alert_id


@dataclass(frozen=True, slots=True)
class Audio:
    url: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Alert:
    """A validated v1 alert payload (docs/protocol.md)."""

    id: str
    msg_type: MsgType
    status: Status
    severity: Severity | None  # only a cancel may leave it out
    event: str
    event_code: str | None
    headline: str
    text: str
    instruction: str | None
    sent: datetime
    expires: datetime
    areas: tuple[str, ...]
    references: tuple[str, ...]
    repeat: int
    audio: Audio | None

    def covers(self, region: str) -> bool:
        """True if ``region`` is one of the areas or below one; no areas means the topic
        alone decides."""
        return not self.areas or any(region.startswith(area) for area in self.areas)


def parse_alert(payload: bytes | str) -> Alert:
    """Validate a v1 alert payload; MalformedAlert says what is wrong."""
    if len(payload) > MAX_PAYLOAD:
        raise MalformedAlert(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedAlert(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedAlert("not a JSON object")
    alert_id = body.get("id")
    if not isinstance(alert_id, str) or not ALERT_ID.fullmatch(alert_id):
        raise MalformedAlert(f"id {alert_id!r} is not an alert id")
    try:
        return _parse_fields(body, alert_id)
    except MalformedAlert as exc:
        exc.alert_id = alert_id
        raise
    except (TypeError, ValueError, AttributeError, RecursionError) as exc:
        # A field of the wrong type (a list where a string belongs, …) that a check above
        # did not foresee: still a malformed alert, never a crash of the terminal.
        raise MalformedAlert(f"bad field: {exc}", alert_id) from None


def _parse_fields(body: dict[str, Any], alert_id: str) -> Alert:
    version = body.get("v")
    if type(version) is not int or version != 1:
        raise MalformedAlert(f"unsupported version v={version!r}")
    msg_type = _one_of(body, "msg_type", MSG_TYPES)
    status = _one_of(body, "status", STATUSES)
    severity = body.get("severity")
    if severity is not None and (not isinstance(severity, str) or severity not in SEVERITY_ZH):
        raise MalformedAlert(f"severity {severity!r} is not one of red, orange, yellow, blue")
    if severity is None and msg_type != "cancel":
        raise MalformedAlert(f"a {msg_type} needs a severity")
    spoken = msg_type != "cancel"
    headline = _text(body, "headline", required=spoken)
    text = _text(body, "text", required=spoken)
    sent = _time(body, "sent")
    expires = _time(body, "expires")
    if expires <= sent:
        raise MalformedAlert("expires is not after sent")
    areas = _strings(body, "areas", REGION_CODE)
    references = _strings(body, "references", ALERT_ID)
    if msg_type != "alert" and not references:
        raise MalformedAlert(f"a {msg_type} must reference the alert it replaces")
    if msg_type == "alert":
        # The engine never sends references on a new alert; a terminal that acted on them would
        # let a malformed alert silence a real one.
        references = ()
    repeat = body.get("repeat", 1)
    if type(repeat) is not int:
        raise MalformedAlert(f"repeat {repeat!r} is not an integer")
    return Alert(
        id=alert_id,
        msg_type=msg_type,  # type: ignore[arg-type]  # checked by _one_of
        status=status,  # type: ignore[arg-type]  # same
        severity=severity,  # type: ignore[arg-type]  # checked against SEVERITY_ZH
        event=_text(body, "event", required=False) or "",
        event_code=_text(body, "event_code", required=False),
        headline=headline or "",
        text=text or "",
        instruction=_text(body, "instruction", required=False),
        sent=sent,
        expires=expires,
        areas=areas,
        references=references,
        # A garbled repeat count must not silence a warning nor keep a village awake all night.
        repeat=min(max(repeat, 1), MAX_REPEAT),
        audio=_audio(body.get("audio")),
    )


def _one_of(body: dict[str, Any], key: str, allowed: frozenset[str]) -> str:
    value = body.get(key)
    if not isinstance(value, str) or value not in allowed:
        raise MalformedAlert(f"{key} {value!r} is not one of {', '.join(sorted(allowed))}")
    return str(value)


def _text(body: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise MalformedAlert(
            f"{key} must be a non-empty string" if required else f"{key} {value!r} is not a string"
        )
    return value


def _time(body: dict[str, Any], key: str) -> datetime:
    value = body.get(key)
    if not isinstance(value, str):
        raise MalformedAlert(f"{key} {value!r} is not an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedAlert(f"{key} {value!r} is not an ISO 8601 time") from None
    if moment.utcoffset() is None:
        raise MalformedAlert(f"{key} {value!r} has no UTC offset")
    return moment


def _strings(body: dict[str, Any], key: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(
        isinstance(item, str) and pattern.fullmatch(item) for item in value
    ):
        raise MalformedAlert(f"{key} must be a list of codes, got {value!r}"[:200])
    return tuple(value)


def _audio(value: object) -> Audio | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("url"), str)
        or not isinstance(value.get("sha256"), str)
        or not _SHA256.fullmatch(value["sha256"])
    ):
        raise MalformedAlert("audio must be null or {url, sha256 (64 hex digits)}")
    return Audio(url=value["url"], sha256=value["sha256"].lower())


def render_announcement(alert: Alert) -> str:
    """The words spoken for an alert: ``[演练：]<colour>预警。headline。text。instruction。``,
    for a cancel ``[演练：]【解除】headline，现已解除。``; in English when the alert is written in
    English. Only what a loudspeaker can say (``receiver.speech.speakable``)."""
    english = is_english(f"{alert.headline} {alert.text}")
    if alert.msg_type == "cancel":
        sentences = lifted(alert.headline, english=english)
    else:
        colours = SEVERITY_EN if english else SEVERITY_ZH
        parts = [colours[alert.severity]] if alert.severity else []
        parts += [alert.headline, alert.text, alert.instruction or ""]
        cleaned = (speakable(part) for part in parts)
        sentences = (" " if english else "").join(
            _sentence(part, english=english) for part in cleaned if part
        )
    if alert.status == "exercise":
        sentences = f"Drill: {sentences}" if english else f"{EXERCISE_PREFIX}：{sentences}"
    return speakable(sentences)


def _sentence(part: str, *, english: bool) -> str:
    if part[-1] in "。！？!?.":
        return part
    return part + ("." if english else "。")


@dataclass(frozen=True, slots=True)
class Ack:
    """An ack to publish on the terminal's ack topic. ``repeated`` marks the answer to a
    re-delivery: the same ack again, ``at`` included."""

    alert_id: str
    state: AckState
    at: datetime
    detail: str | None = None
    repeated: bool = False

    def payload(self) -> bytes:
        # Formatted by hand: a province-wide alert makes 35,000 of these in the simulator, and
        # json.dumps of a dict costs twice as much. Strings still go through the JSON encoder.
        detail = "" if self.detail is None else f',"detail":{_json_string(self.detail)}'
        return (
            f'{{"v":1,"alert_id":{_json_string(self.alert_id)},"state":"{self.state}",'
            f'"at":"{_iso(self.at)}"{detail}}}'
        ).encode()


@dataclass(frozen=True, slots=True)
class Play:
    """Start (or queue) playback of an alert ``alert.repeat`` times; report back with
    ``TerminalBrain.begin`` and ``TerminalBrain.finished``."""

    alert: Alert

    @property
    def alert_id(self) -> str:
        return self.alert.id

    @property
    def text(self) -> str:
        # Rendered on demand: the simulator's many terminals never speak.
        return render_announcement(self.alert)


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop (or unqueue) playback of ``alert_id`` because alert ``by`` replaced it."""

    alert_id: str
    reason: Literal["cancelled", "superseded"]
    by: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """A message that was not acted on; log it."""

    topic: str
    reason: str
    alert_id: str | None = None


@dataclass(frozen=True, slots=True)
class Rejected(Dropped):
    """A message refused for what it claims to be (a bad or missing signature, a replay):
    log it, and report it on the terminal's state topic (``state_payload(..., rejected=)``),
    since someone may be trying to make terminals speak. ``kid`` as the message named it."""

    kid: str | None = None
    at: datetime = field(kw_only=True)


Action = Ack | Play | Stop | Dropped

# Given a message's bytes and the terminal's clock: its verified payload, or SignatureRejected.
Verifier = Callable[[bytes, datetime], bytes]


@dataclass(slots=True)
class _Record:
    """What the brain knows of one alert id (``alert`` is None while it is known only as the
    target of an update or cancel that arrived first)."""

    alert: Alert | None
    forget_at: datetime
    last_ack: Ack | None = None
    active: bool = False  # Play given, and neither finished nor stopped
    sounded: bool = False  # its playback started here (or a restart restored it as played)
    # The newest update or cancel that replaced this alert: (its sent, its id, why).
    replaced_by: tuple[datetime, str, Literal["cancelled", "superseded"]] | None = None


@dataclass(slots=True)
class TerminalBrain:
    """The decisions of one terminal; see the module docstring for the rules."""

    terminal_id: str
    region: str
    # Send a ``playing`` ack when playback starts (national state 2); off in big simulations,
    # where it is one more message per terminal.
    ack_playing: bool = True
    retain_after_expiry: timedelta = timedelta(hours=1)
    max_records: int = 10_000
    # The simulator shares one caching decoder between thousands of brains.
    decode: Callable[[bytes], Alert] = parse_alert
    # Keyring.verify, or a CachingVerifier shared like ``decode``; None refuses everything.
    verify: Verifier | None = None
    # The replay window around the terminal's clock for an alert's ``sent``. An alert resent
    # within it is answered from memory (the repeated ack); outside it, it is refused.
    max_age: timedelta = timedelta(hours=24)
    skew: timedelta = timedelta(minutes=5)
    # Catching up after a reconnect: a burst ends after this long without a message, and at
    # the latest this long after the connect (a warning waits no longer than that).
    catch_up_quiet: timedelta = timedelta(milliseconds=300)
    catch_up_max: timedelta = timedelta(seconds=3)
    topics: list[str] = field(init=False)
    # While catching up: the Plays held until the burst settles (alert id → Play, in order).
    _held: dict[str, Play] | None = field(init=False, default=None)
    _catch_up_until: datetime | None = field(init=False, default=None)
    _catch_up_limit: datetime | None = field(init=False, default=None)
    _records: dict[str, _Record] = field(init=False, default_factory=dict)
    _forget: list[tuple[datetime, str]] = field(init=False, default_factory=list)
    _topic_set: frozenset[str] = field(init=False)
    _cmd: str = field(init=False)

    def __post_init__(self) -> None:
        self.topics = terminal_topics(self.terminal_id, self.region)
        self._topic_set = frozenset(self.topics)
        self._cmd = cmd_topic(self.terminal_id)

    def handle(self, topic: str, payload: bytes, now: datetime) -> list[Action]:
        """Decide what to do with one message; never raises on bad input."""
        _check_aware(now)
        self._prune(now)
        if topic not in self._topic_set:
            return [Dropped(topic, "not one of this terminal's topics")]
        if self.verify is None:
            return [Rejected(topic, "no keyring configured", at=now)]
        try:
            payload = self.verify(payload, now)
        except SignatureRejected as exc:
            return [Rejected(topic, exc.reason, kid=exc.kid, at=now)]
        try:
            if topic == self._cmd and _is_command(payload):
                return [Dropped(topic, "unknown command")]
            alert = self.decode(payload)
        except MalformedAlert as exc:
            return [Dropped(topic, f"malformed: {exc.reason}", exc.alert_id)]
        except (TypeError, ValueError, RecursionError) as exc:
            return [Dropped(topic, f"malformed: {exc}")]
        if alert.sent < now - self.max_age:
            reason = f"replay: sent {_iso(alert.sent)} is more than {_span(self.max_age)} ago"
            return [Rejected(topic, reason, alert.id, at=now)]
        if alert.sent > now + self.skew:
            reason = f"replay: sent {_iso(alert.sent)} is more than {_span(self.skew)} ahead"
            return [Rejected(topic, reason, alert.id, at=now)]
        if not alert.covers(self.region):
            return [Dropped(topic, f"region {self.region} is outside the alert's areas", alert.id)]
        record = self._records.get(alert.id)
        if record is not None and record.alert is not None:
            if record.last_ack is None:
                return []
            return [replace(record.last_ack, repeated=True)]
        actions = self._first_delivery(alert, record, now)
        return actions if self._held is None else self._hold(actions, now)

    # -- catching up after a reconnect ------------------------------------------------------

    def start_catch_up(self, now: datetime) -> None:
        """The link is up again with the session the broker kept: what it queued meanwhile
        comes now, in a burst; hold its Plays until ``catch_up_due`` says it settled."""
        _check_aware(now)
        if self._held is None:
            self._held = {}
        self._catch_up_until = now + self.catch_up_quiet
        self._catch_up_limit = now + self.catch_up_max

    @property
    def catching_up(self) -> bool:
        return self._held is not None

    def catch_up_due(self) -> datetime | None:
        """When to call ``end_catch_up`` (it moves later with each message of the burst, up to
        ``catch_up_max`` after the connect); None when not catching up."""
        return self._catch_up_until if self._held is not None else None

    def end_catch_up(self, now: datetime) -> list[Action]:
        """The burst settled: Plays for what is still in force, in the order it came; acks
        for held alerts that expired meanwhile, and for cancels with nothing to lift."""
        held, self._held = self._held or {}, None
        self._catch_up_until = self._catch_up_limit = None
        actions: list[Action] = []
        for alert_id, play in held.items():
            record = self._records.get(alert_id)
            if record is None or not record.active:
                continue  # stopped by a later message of the burst: its ack went out then
            if now >= play.alert.expires:
                record.active = False
                actions.append(self._ack(record, "failed", now, DETAIL_EXPIRED))
            elif play.alert.msg_type == "cancel" and not self._lifts_sounded(play.alert):
                # The village never heard this warning from here: "lifted" would only confuse.
                record.active = False
                actions.append(self._ack(record, "played", now, DETAIL_SILENT))
            else:
                actions.append(play)
        return actions

    def _hold(self, actions: list[Action], now: datetime) -> list[Action]:
        held = self._held
        assert held is not None  # noqa: S101  only called while catching up
        if self._catch_up_limit is not None:
            self._catch_up_until = min(now + self.catch_up_quiet, self._catch_up_limit)
        out: list[Action] = []
        for action in actions:
            if isinstance(action, Play):
                held[action.alert_id] = action
            elif isinstance(action, Stop) and action.alert_id in held:
                del held[action.alert_id]  # never started: nothing to stop
            else:
                out.append(action)
        return out

    def _lifts_sounded(self, cancel: Alert) -> bool:
        """Whether an alert of the chain ``cancel`` lifts sounded on this terminal."""
        seen: set[str] = set()
        todo = list(cancel.references)
        while todo:
            ref = todo.pop()
            if ref in seen:
                continue
            seen.add(ref)
            record = self._records.get(ref)
            if record is None:
                continue
            if record.sounded:
                return True
            if record.alert is not None:
                todo.extend(record.alert.references)
        return False

    def begin(self, alert_id: str, now: datetime) -> list[Action]:
        """Playback of ``alert_id`` is about to start: a ``playing`` ack, or ``failed/expired``
        if it expired while queued (check ``is_active`` before sounding it)."""
        record = self._records.get(alert_id)
        if record is None or not record.active or record.alert is None:
            return []
        if now >= record.alert.expires:
            record.active = False
            return [self._ack(record, "failed", now, DETAIL_EXPIRED)]
        record.sounded = True
        if not self.ack_playing:
            return []
        return [self._ack(record, "playing", now)]

    def finished(self, alert_id: str, now: datetime, *, error: str | None = None) -> list[Action]:
        """Playback of ``alert_id`` ended: ``played``, or ``failed`` with ``error`` as detail.
        Nothing if it was stopped meanwhile: that ack went out with the Stop."""
        record = self._records.get(alert_id)
        if record is None or not record.active:
            return []
        record.active = False
        if error is not None:
            return [self._ack(record, "failed", now, error[:200])]
        return [self._ack(record, "played", now)]

    def handled(self) -> list[tuple[Alert, Ack]]:
        """Alerts this terminal answered, with its latest ack: what a restart must not forget."""
        return [
            (record.alert, record.last_ack)
            for record in self._records.values()
            if record.alert is not None and record.last_ack is not None
        ]

    def restore(self, alert: Alert, last_ack: Ack, now: datetime) -> None:
        """Remember an alert handled before a restart: a re-delivery of it (a resend, because
        the old ack never reached the broker) repeats ``last_ack`` and never plays again.
        An alert whose playback the restart cut short is not restored: it plays when it comes
        again, since a warning heard halfway was not heard."""
        if now >= alert.expires + self.retain_after_expiry or last_ack.state not in (
            "played",
            "failed",
        ):
            return
        record = self._remember(alert.id, alert, alert.expires, self._records.get(alert.id))
        record.last_ack = last_ack
        record.active = False
        record.sounded = last_ack.state == "played" and last_ack.detail is None

    def is_active(self, alert_id: str) -> bool:
        record = self._records.get(alert_id)
        return record is not None and record.active

    def last_ack(self, alert_id: str) -> Ack | None:
        record = self._records.get(alert_id)
        return None if record is None else record.last_ack

    def __len__(self) -> int:
        """How many alert ids are remembered."""
        return len(self._records)

    def _first_delivery(self, alert: Alert, record: _Record | None, now: datetime) -> list[Action]:
        record = self._remember(alert.id, alert, alert.expires, record)
        if now >= alert.expires:
            return [self._ack(record, "failed", now, DETAIL_EXPIRED)]
        if alert.status == "test":
            return [
                self._ack(record, "received", now),
                self._ack(record, "played", now, DETAIL_TEST),
            ]
        actions: list[Action] = []
        # A list, not a generator: every reference must be replaced, not just the first.
        replaced = [self._replace(ref, alert, now, actions) for ref in alert.references]
        if record.replaced_by is not None:
            # Its own update or cancel came first (an engine retry, or a terminal that was
            # offline); what it replaced is still replaced, but it is not played.
            return [*actions, self._ack(record, "failed", now, record.replaced_by[2])]
        if alert.references and not any(replaced):
            return [*actions, self._ack(record, "failed", now, DETAIL_SUPERSEDED)]
        actions.append(self._ack(record, "received", now))
        record.active = True
        if alert.msg_type == "cancel" and not alert.headline.strip():
            # A cancel may come without texts; it is announced with what it lifts.
            alert = replace(alert, headline=self._lifted_headline(alert))
        actions.append(Play(alert))
        return actions

    def _lifted_headline(self, cancel: Alert) -> str:
        """The headline of the first alert ``cancel`` references that this terminal knows."""
        for ref in cancel.references:
            record = self._records.get(ref)
            if record is not None and record.alert is not None and record.alert.headline:
                return record.alert.headline
        return ""

    def _replace(self, ref: str, by: Alert, now: datetime, actions: list[Action]) -> bool:
        """Let ``by`` replace alert ``ref``; False if ``ref`` is newer than ``by`` or already
        replaced by something newer (a stale update or cancel changes nothing)."""
        record = self._records.get(ref)
        if record is not None:
            if record.alert is not None and record.alert.sent > by.sent:
                return False
            if record.replaced_by is not None:
                previous_sent, previous_id, _ = record.replaced_by
                if previous_sent > by.sent:
                    return False
                if previous_id != by.id:
                    # The older replacement (say an earlier update) is replaced as well.
                    self._replace(previous_id, by, now, actions)
        record = self._remember(ref, None, by.expires, record)
        reason: Literal["cancelled", "superseded"] = (
            DETAIL_CANCELLED if by.msg_type == "cancel" else DETAIL_SUPERSEDED
        )
        record.replaced_by = (by.sent, by.id, reason)
        if record.active:
            record.active = False
            actions.append(Stop(ref, reason, by.id))
            actions.append(self._ack(record, "failed", now, reason))
        return True

    def _ack(
        self, record: _Record, state: AckState, now: datetime, detail: str | None = None
    ) -> Ack:
        assert record.alert is not None  # noqa: S101  only handled alerts are acked
        ack = Ack(record.alert.id, state, now, detail)
        record.last_ack = ack
        return ack

    def _remember(
        self, alert_id: str, alert: Alert | None, expires: datetime, record: _Record | None
    ) -> _Record:
        forget_at = expires + self.retain_after_expiry
        if record is None:
            record = _Record(alert, forget_at)
            self._records[alert_id] = record
            heapq.heappush(self._forget, (forget_at, alert_id))
            while len(self._records) > self.max_records:
                self._evict_one()
            return record
        if alert is not None:
            record.alert = alert
        if forget_at > record.forget_at:
            record.forget_at = forget_at
            heapq.heappush(self._forget, (forget_at, alert_id))
        return record

    def _prune(self, now: datetime) -> None:
        while self._forget and self._forget[0][0] <= now:
            self._evict_one()

    def _evict_one(self) -> None:
        forget_at, alert_id = heapq.heappop(self._forget)
        record = self._records.get(alert_id)
        # A record whose forget_at moved later has a newer heap entry; this one is stale.
        if record is not None and record.forget_at == forget_at:
            del self._records[alert_id]


def _is_command(payload: bytes) -> bool:
    # Commands carry "cmd" instead of an alert's fields; a cheap look before a full parse.
    if b'"cmd"' not in payload:
        return False
    try:
        body = json.loads(payload)
    except ValueError:
        return False
    return isinstance(body, dict) and "cmd" in body and "msg_type" not in body


def _check_aware(now: datetime) -> None:
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min" if seconds and seconds % 60 == 0 else f"{seconds} s"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


_json_string = json.JSONEncoder(ensure_ascii=False).encode


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
