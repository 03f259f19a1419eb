"""The terminal's decisions: signatures and replays, validation, dedup, expiry, resend, cancel,
update, ordering, speech."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from dispatcher.core.regions import Level, Region, RegionTree
from dispatcher.core.signing import ALG_ED25519, CachingVerifier, Keyring, SigningKey
from receiver.brain import (
    MAX_PAYLOAD,
    SEVERITY_ZH,
    Ack,
    Action,
    Dropped,
    MalformedAlert,
    Play,
    Rejected,
    Stop,
    TerminalBrain,
    parse_alert,
    render_announcement,
    state_payload,
    terminal_topics,
)
from tests.helpers import COUNTY_TOPIC, PROVINCE_TOPIC, VILLAGE_TOPIC, ZHONGSHAN

CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 7, 1, 8, 0, tzinfo=CST)
CMD_TOPIC = "eb/v1/term/T1/cmd"


def alert(alert_id: str = "a1", *, sent: datetime = T0, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1,
        "id": alert_id,
        "msg_type": "alert",
        "status": "actual",
        "severity": "red",
        "event": "台风",
        "event_code": "11B01",
        "headline": "福州市台风红色预警",
        "text": "预计未来24小时内将出现12级以上大风",
        "instruction": "请立即转移至安全场所",
        "sent": sent.isoformat(),
        "expires": (sent + timedelta(hours=6)).isoformat(),
        "areas": ["350102"],
        "references": [],
        "repeat": 3,
        "audio": None,
    }
    body.update(fields)
    return body


def update(alert_id: str, refs: list[str], sent: datetime, **fields: Any) -> dict[str, Any]:
    return alert(alert_id, sent=sent, msg_type="update", references=refs, **fields)


def cancel(alert_id: str, refs: list[str], sent: datetime) -> dict[str, Any]:
    return alert(alert_id, sent=sent, msg_type="cancel", references=refs)


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


# The engine's key in these tests, and the keyring the terminals are provisioned with.
KEY = SigningKey(ALG_ED25519, bytes(range(32)))
KEYRING = Keyring([KEY.public()])


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def sign(payload: bytes | dict[str, Any], key: SigningKey = KEY) -> bytes:
    """``payload`` as the engine publishes it: a JWS signed by ``key``. Built here rather than
    by Signer, which refuses an oversized payload that these tests must still deliver."""
    raw = payload if isinstance(payload, bytes) else encode(payload)
    header = f'{{"alg":"{key.alg}","kid":"{key.kid}","typ":"ebd+v1"}}'.encode()
    signing_input = _b64(header) + b"." + _b64(raw)
    return signing_input + b"." + _b64(key.sign(signing_input))


def brain(**kwargs: Any) -> TerminalBrain:
    kwargs.setdefault("verify", KEYRING.verify)
    return TerminalBrain("T1", ZHONGSHAN, **kwargs)


def summary(actions: list[Action]) -> list[str]:
    """Actions as short strings, so a table reads like the log of a terminal."""
    lines = []
    for action in actions:
        if isinstance(action, Ack):
            line = f"ack {action.alert_id} {action.state}"
            line += f" {action.detail}" if action.detail else ""
            line += " (repeat)" if action.repeated else ""
        elif isinstance(action, Play):
            line = f"play {action.alert_id}"
        elif isinstance(action, Stop):
            line = f"stop {action.alert_id} {action.reason} by {action.by}"
        elif isinstance(action, Rejected):
            line = f"reject {action.reason}"
        else:
            assert isinstance(action, Dropped)
            line = f"drop {action.reason}"
        lines.append(line)
    return lines


def deliver(b: TerminalBrain, body: dict[str, Any] | bytes, *, topic: str = COUNTY_TOPIC,
            now: datetime = T0 + timedelta(minutes=1)) -> list[str]:  # fmt: skip
    """Deliver ``body`` signed by the engine's key, as the engine publishes it."""
    return summary(b.handle(topic, sign(body), now))


# -- validation ----------------------------------------------------------------------------

NESTED = "NESTED"
DEEP = b"[" * 5000 + b"]" * 5000
MALFORMED = [
    ("not JSON", b"{not json", "not JSON"),
    ("a JSON array", b"[1, 2]", "not a JSON object"),
    ("bytes that are not UTF-8", b"\xff\xfe\x00", "not JSON"),
    ("no id", encode({**alert(), "id": None}), "not an alert id"),
    ("an id with a slash", encode(alert("a/1")), "not an alert id"),
    ("version 2", encode(alert(v=2)), "unsupported version"),
    ("version as a string", encode(alert(v="1")), "unsupported version"),
    ("version true", encode(alert(v=True)), "unsupported version"),
    ("unknown msg_type", encode(alert(msg_type="warning")), "msg_type"),
    ("unknown status", encode(alert(status="system")), "status"),
    ("unknown severity", encode(alert(severity="purple")), "severity"),
    ("an alert without severity", encode(alert(severity=None)), "needs a severity"),
    ("an empty headline", encode(alert(headline="  ")), "headline"),
    ("text missing", encode({k: v for k, v in alert().items() if k != "text"}), "text"),
    ("instruction a number", encode(alert(instruction=5)), "instruction"),
    ("sent without offset", encode(alert() | {"sent": "2026-07-01T08:00:00"}), "no UTC offset"),
    ("expires not a time", encode(alert(expires="tomorrow")), "expires"),
    ("expires before sent", encode(alert(expires=(T0 - timedelta(1)).isoformat())), "not after"),
    ("areas a string", encode(alert(areas="350102")), "areas"),
    ("an area of 5 digits", encode(alert(areas=["35010"])), "areas"),
    ("an update without references", encode(alert(msg_type="update")), "must reference"),
    ("a reference that is no id", encode(update("u1", ["a 1"], T0)), "references"),
    ("repeat a string", encode(alert(repeat="3")), "repeat"),
    ("audio without sha256", encode(alert(audio={"url": "http://x/a.mp3"})), "audio"),
    ("audio with a short sha256", encode(alert(audio={"url": "u", "sha256": "ab"})), "audio"),
    ("a payload over the limit", encode(alert(text="风" * MAX_PAYLOAD)), "over"),
    ("msg_type a list", encode(alert(msg_type=[])), "msg_type"),
    ("severity a list", encode(alert(severity=[])), "severity"),
    ("status a dict", encode(alert(status={})), "status"),
    ("deeply nested JSON", b"[" * 5000 + b"]" * 5000, "not JSON"),
    ("a deeply nested field", encode(alert(x=NESTED)).replace(b'"NESTED"', DEEP), "not JSON"),
]


@pytest.mark.parametrize(("payload", "reason"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])  # fmt: skip
def test_a_malformed_alert_is_dropped_with_its_reason_and_never_acked(
    payload: bytes, reason: str
) -> None:
    with pytest.raises(MalformedAlert, match=re.escape(reason)):
        parse_alert(payload)
    actions = brain().handle(COUNTY_TOPIC, sign(payload), T0)
    assert len(actions) == 1
    assert isinstance(actions[0], Dropped)
    assert reason in actions[0].reason


def test_a_malformed_alert_with_a_readable_id_names_it() -> None:
    (dropped,) = brain().handle(COUNTY_TOPIC, sign(alert("a9", status="nope")), T0)
    assert isinstance(dropped, Dropped)
    assert dropped.alert_id == "a9"


ACCEPTED = [
    ("a cancel needs no severity nor texts",
     cancel("c1", ["a1"], T0) | {"severity": None, "headline": None, "text": None},
     {"msg_type": "cancel", "severity": None, "headline": ""}),
    ("null event_code and instruction", alert(event_code=None, instruction=None),
     {"event_code": None, "instruction": None}),
    ("times in UTC with Z",
     alert() | {"sent": "2026-07-01T00:00:00Z", "expires": "2026-07-01T06:00:00Z"},
     {"sent": datetime(2026, 7, 1, tzinfo=UTC)}),
    ("repeat 0 plays once", alert(repeat=0), {"repeat": 1}),
    ("repeat 99 plays 10 times", alert(repeat=99), {"repeat": 10}),
    ("no repeat plays once", {k: v for k, v in alert().items() if k != "repeat"}, {"repeat": 1}),
    ("references on a new alert are ignored", alert(references=["x1"]), {"references": ()}),
    ("unknown keys are ignored", alert(sender="fj-35"), {"id": "a1"}),
    ("audio with its hash", alert(audio={"url": "https://x/a.mp3", "sha256": "AB" * 32}),
     {"audio.sha256": "ab" * 32}),
]  # fmt: skip


@pytest.mark.parametrize(("body", "expected"), [a[1:] for a in ACCEPTED],
                         ids=[a[0] for a in ACCEPTED])  # fmt: skip
def test_a_valid_alert_parses(body: dict[str, Any], expected: dict[str, Any]) -> None:
    parsed = parse_alert(encode(body))
    for key, value in expected.items():
        target: Any = parsed
        for part in key.split("."):
            target = getattr(target, part)
        assert target == value, key


# -- dedup, expiry, resend -----------------------------------------------------------------


def test_an_alert_is_played_once_however_often_and_by_whatever_topic_it_arrives() -> None:
    b = brain()
    assert deliver(b, alert()) == ["ack a1 received", "play a1"]
    assert deliver(b, alert(), topic=PROVINCE_TOPIC) == ["ack a1 received (repeat)"]
    assert deliver(b, alert(), topic=VILLAGE_TOPIC) == ["ack a1 received (repeat)"]
    assert summary(b.finished("a1", T0 + timedelta(minutes=2))) == ["ack a1 played"]
    assert deliver(b, alert(), topic=CMD_TOPIC) == ["ack a1 played (repeat)"]


def test_a_resend_repeats_the_latest_ack_exactly() -> None:
    b = brain()
    b.handle(COUNTY_TOPIC, sign(alert()), T0)
    played_at = T0 + timedelta(seconds=40)
    (played,) = b.finished("a1", played_at)
    (again,) = b.handle(CMD_TOPIC, sign(alert()), T0 + timedelta(hours=1))
    assert isinstance(played, Ack)
    assert isinstance(again, Ack)
    assert again.payload() == played.payload()
    assert again.repeated
    assert b.last_ack("a1") == played


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (T0 + timedelta(hours=6), ["ack a1 failed expired"]),
        # Still inside the replay window (24 h after sent); beyond it, see the replay tests.
        (T0 + timedelta(hours=23), ["ack a1 failed expired"]),
        (T0 + timedelta(hours=6) - timedelta(microseconds=1), ["ack a1 received", "play a1"]),
    ],
    ids=["at the expiry", "long after", "just before"],
)
def test_an_expired_alert_is_never_played_and_acked_failed_expired(
    now: datetime, expected: list[str]
) -> None:
    assert deliver(brain(), alert(), now=now) == expected


def test_a_resend_of_an_expired_alert_repeats_failed_and_does_not_play() -> None:
    b = brain()
    late = T0 + timedelta(hours=6, minutes=30)
    assert deliver(b, alert(), now=late) == ["ack a1 failed expired"]
    assert deliver(b, alert(), topic=CMD_TOPIC, now=late) == ["ack a1 failed expired (repeat)"]


def test_an_alert_that_expires_while_queued_is_not_started() -> None:
    b = brain()
    deliver(b, alert())
    assert summary(b.begin("a1", T0 + timedelta(hours=6))) == ["ack a1 failed expired"]
    assert not b.is_active("a1")
    assert b.finished("a1", T0 + timedelta(hours=7)) == []


@pytest.mark.parametrize(("ack_playing", "expected"), [(True, ["ack a1 playing"]), (False, [])])
def test_begin_acks_playing_only_when_asked(ack_playing: bool, expected: list[str]) -> None:
    b = brain(ack_playing=ack_playing)
    deliver(b, alert())
    assert summary(b.begin("a1", T0 + timedelta(minutes=1))) == expected
    assert b.is_active("a1")


def test_a_player_failure_is_acked_failed_with_its_detail() -> None:
    b = brain()
    deliver(b, alert())
    acks = b.finished("a1", T0 + timedelta(minutes=1), error="amplifier fault")
    assert summary(acks) == ["ack a1 failed amplifier fault"]
    assert deliver(b, alert(), topic=CMD_TOPIC) == ["ack a1 failed amplifier fault (repeat)"]


# -- status --------------------------------------------------------------------------------


def test_an_exercise_is_played_with_the_drill_prefix() -> None:
    b = brain()
    actions = b.handle(COUNTY_TOPIC, sign(alert(status="exercise")), T0)
    play = actions[1]
    assert isinstance(play, Play)
    assert play.text.startswith("演练：")


def test_a_test_message_is_acked_but_never_sounded_nor_allowed_to_stop_a_warning() -> None:
    b = brain()
    deliver(b, alert("a1"))
    test_cancel = cancel("t1", ["a1"], T0 + timedelta(minutes=5)) | {"status": "test"}
    assert deliver(b, test_cancel) == ["ack t1 received", "ack t1 played test"]
    assert b.is_active("a1")


# -- cancel, update and their order --------------------------------------------------------

M = timedelta(minutes=1)

SCENARIOS = [
    (
        "a cancel stops the alert it references and is announced",
        [
            (alert("a1"), ["ack a1 received", "play a1"]),
            (cancel("c1", ["a1"], T0 + 5 * M),
             ["stop a1 cancelled by c1", "ack a1 failed cancelled",
              "ack c1 received", "play c1"]),
        ],
    ),
    (
        "an update stops the old alert and plays itself",
        [
            (alert("a1"), ["ack a1 received", "play a1"]),
            (update("u1", ["a1"], T0 + 5 * M),
             ["stop a1 superseded by u1", "ack a1 failed superseded",
              "ack u1 received", "play u1"]),
        ],
    ),
    (
        "an update older than the update in force changes nothing",
        [
            (alert("a1"), ["ack a1 received", "play a1"]),
            (update("u2", ["a1"], T0 + 10 * M),
             ["stop a1 superseded by u2", "ack a1 failed superseded",
              "ack u2 received", "play u2"]),
            (update("u1", ["a1"], T0 + 5 * M), ["ack u1 failed superseded"]),
        ],
    ),
    (
        "a cancel older than the update in force does not stop it",
        [
            (alert("a1"), ["ack a1 received", "play a1"]),
            (update("u1", ["a1"], T0 + 10 * M),
             ["stop a1 superseded by u1", "ack a1 failed superseded",
              "ack u1 received", "play u1"]),
            (cancel("c1", ["a1"], T0 + 5 * M), ["ack c1 failed superseded"]),
        ],
    ),
    (
        "a newer update of the same alert replaces the earlier update too",
        [
            (alert("a1"), ["ack a1 received", "play a1"]),
            (update("u1", ["a1"], T0 + 5 * M),
             ["stop a1 superseded by u1", "ack a1 failed superseded",
              "ack u1 received", "play u1"]),
            (update("u2", ["a1"], T0 + 10 * M),
             ["stop u1 superseded by u2", "ack u1 failed superseded",
              "ack u2 received", "play u2"]),
        ],
    ),
    (
        "an alert whose update came first is not played",
        [
            (update("u1", ["a1"], T0 + 5 * M), ["ack u1 received", "play u1"]),
            (alert("a1"), ["ack a1 failed superseded"]),
        ],
    ),
    (
        "an alert whose cancel came first is not played",
        [
            (cancel("c1", ["a1"], T0 + 5 * M), ["ack c1 received", "play c1"]),
            (alert("a1"), ["ack a1 failed cancelled"]),
        ],
    ),
    (
        "an update arriving after its own update still stops what it replaced",
        [
            (alert("a1"), ["ack a1 received", "play a1"]),
            (update("u2", ["u1"], T0 + 10 * M), ["ack u2 received", "play u2"]),
            (update("u1", ["a1"], T0 + 5 * M),
             ["stop a1 superseded by u1", "ack a1 failed superseded",
              "ack u1 failed superseded"]),
        ],
    ),
    (
        "a cancel of an alert already played leaves its played ack alone",
        [
            (alert("a1"), ["ack a1 received", "play a1"]),
            ("finish a1", ["ack a1 played"]),
            (cancel("c1", ["a1"], T0 + 5 * M), ["ack c1 received", "play c1"]),
            ("resend a1", ["ack a1 played (repeat)"]),
        ],
    ),
    (
        "an update sent before the alert it references is stale",
        [
            (alert("a1", sent=T0 + 10 * M), ["ack a1 received", "play a1"]),
            (update("u1", ["a1"], T0 + 5 * M), ["ack u1 failed superseded"]),
        ],
    ),
    (
        "a cancel of two alerts stops both",
        [
            (alert("a1"), ["ack a1 received", "play a1"]),
            (alert("a2"), ["ack a2 received", "play a2"]),
            (cancel("c1", ["a1", "a2"], T0 + 5 * M),
             ["stop a1 cancelled by c1", "ack a1 failed cancelled",
              "stop a2 cancelled by c1", "ack a2 failed cancelled",
              "ack c1 received", "play c1"]),
        ],
    ),
    (
        "a stopped alert finishing later gives no second ack",
        [
            (alert("a1"), ["ack a1 received", "play a1"]),
            (cancel("c1", ["a1"], T0 + 5 * M),
             ["stop a1 cancelled by c1", "ack a1 failed cancelled",
              "ack c1 received", "play c1"]),
            ("finish a1", []),
            ("resend a1", ["ack a1 failed cancelled (repeat)"]),
            ("finish c1", ["ack c1 played"]),
        ],
    ),
]  # fmt: skip


@pytest.mark.parametrize("steps", [s[1] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS])
def test_cancel_and_update_follow_sent_order(
    steps: list[tuple[dict[str, Any] | str, list[str]]],
) -> None:
    b = brain()
    now = T0 + timedelta(minutes=30)
    for n, (step, expected) in enumerate(steps):
        if isinstance(step, str):
            verb, alert_id = step.split()
            if verb == "finish":
                got = summary(b.finished(alert_id, now))
            else:
                got = deliver(b, alert(alert_id), topic=CMD_TOPIC, now=now)
        else:
            got = deliver(b, step, now=now)
        assert got == expected, f"step {n}: {step if isinstance(step, str) else step['id']}"


# -- what is not for this terminal ---------------------------------------------------------

DROPS = [
    ("another village's topic", "eb/v1/alert/35/3501/350102/350102001/350102001002",
     encode(alert()), "not one of this terminal's topics"),
    ("a wildcard-looking topic", "eb/v1/alert/35/#", encode(alert()),
     "not one of this terminal's topics"),
    ("another terminal's cmd topic", "eb/v1/term/T2/cmd", encode(alert()),
     "not one of this terminal's topics"),
    ("areas that leave this village out", COUNTY_TOPIC,
     encode(alert(areas=["350102001002", "350103"])),
     "region 350102001001 is outside the alert's areas"),
    ("an unknown command", CMD_TOPIC, b'{"v":1,"cmd":"reboot"}', "unknown command"),
]  # fmt: skip


@pytest.mark.parametrize(("topic", "payload", "reason"), [d[1:] for d in DROPS],
                         ids=[d[0] for d in DROPS])  # fmt: skip
def test_a_message_not_for_this_terminal_is_dropped(
    topic: str, payload: bytes, reason: str
) -> None:
    assert deliver(brain(), payload, topic=topic) == [f"drop {reason}"]


@pytest.mark.parametrize(
    "areas", [[], ["35"], ["350102001"], [ZHONGSHAN], ["350103", "3501"]], ids=str
)
def test_areas_at_or_above_the_village_reach_it(areas: list[str]) -> None:
    assert deliver(brain(), alert(areas=areas)) == ["ack a1 received", "play a1"]


# -- memory --------------------------------------------------------------------------------


def test_ids_are_forgotten_after_expiry_plus_retention() -> None:
    b = brain(retain_after_expiry=timedelta(hours=1))
    deliver(b, alert("a1"))
    deliver(b, alert("a2", expires=(T0 + timedelta(days=1)).isoformat()))
    assert len(b) == 2
    b.handle(COUNTY_TOPIC, b"junk", T0 + timedelta(hours=7))
    assert len(b) == 1
    # Forgotten, so a resend now is judged on its own: expired.
    assert deliver(b, alert("a1"), now=T0 + timedelta(hours=7)) == ["ack a1 failed expired"]


def test_never_more_than_max_records_ids_are_kept() -> None:
    b = brain(max_records=50)
    for n in range(200):
        deliver(b, alert(f"a{n}", sent=T0 + timedelta(seconds=n)))
    assert len(b) == 50
    # The ones closest to expiry went first.
    assert b.last_ack("a199") is not None
    assert b.last_ack("a0") is None


# -- speech --------------------------------------------------------------------------------

ANNOUNCEMENTS = [
    ("red", "actual", "台风预警", "风很大", "请转移", "红色预警。台风预警。风很大。请转移。"),
    ("orange", "actual", "暴雨", "雨很大！", None, "橙色预警。暴雨。雨很大！"),
    ("yellow", "exercise", "雷电", "演练内容。", "", "演练：黄色预警。雷电。演练内容。"),
    ("blue", "actual", " 大雾 ", "能见度低", "  ", "蓝色预警。大雾。能见度低。"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("severity", "status", "headline", "text", "instruction", "spoken"), ANNOUNCEMENTS
)
def test_render_announcement(
    severity: str, status: str, headline: str, text: str, instruction: str | None, spoken: str
) -> None:
    body = alert(
        severity=severity, status=status, headline=headline, text=text, instruction=instruction
    )
    assert render_announcement(parse_alert(encode(body))) == spoken


# -- payloads and topics -------------------------------------------------------------------


def test_an_ack_payload_is_the_v1_contract() -> None:
    at = datetime(2026, 7, 1, 8, 0, 1, 234567, tzinfo=CST)
    assert json.loads(Ack("a1", "played", at).payload()) == {
        "v": 1,
        "alert_id": "a1",
        "state": "played",
        "at": "2026-07-01T08:00:01.234+08:00",
    }
    assert json.loads(Ack("a1", "failed", at, "expired").payload())["detail"] == "expired"


def test_state_payloads() -> None:
    online = json.loads(state_payload("online", ZHONGSHAN, "fw/1", T0))
    assert online == {
        "v": 1,
        "state": "online",
        "region": ZHONGSHAN,
        "firmware": "fw/1",
        "at": "2026-07-01T08:00:00.000+08:00",
    }
    assert "at" not in json.loads(state_payload("offline", ZHONGSHAN, "fw/1", None))


def test_a_terminal_subscribes_to_its_path_and_its_cmd_topic_only() -> None:
    tree = RegionTree.from_regions(
        [
            Region("35", "福建省", Level.PROVINCE, None),
            Region("3501", "福州市", Level.CITY, "35"),
            Region("350102", "鼓楼区", Level.COUNTY, "3501"),
            Region("350102001", "鼓东街道", Level.TOWNSHIP, "350102"),
            Region(ZHONGSHAN, "中山社区", Level.VILLAGE, "350102001"),
        ]
    )
    topics = terminal_topics("T1", ZHONGSHAN)
    assert topics == [*tree.subscription_topics(ZHONGSHAN), CMD_TOPIC]
    assert topics[0] == PROVINCE_TOPIC
    assert topics[-2] == VILLAGE_TOPIC
    assert not any("#" in t or "+" in t for t in topics)
    assert brain().topics == topics


def test_the_receiver_agrees_with_the_engine_models() -> None:
    from typing import get_args

    from dispatcher.core import wire
    from dispatcher.core.models import MsgType, Severity, Status
    from receiver import brain

    assert {s.value: s.label_zh for s in Severity} == SEVERITY_ZH
    assert tuple(s.value for s in Severity) == wire.SEVERITIES == get_args(brain.Severity)
    assert {m.value for m in MsgType} == wire.MSG_TYPES == set(get_args(brain.MsgType))
    assert {s.value for s in Status} == wire.STATUSES == set(get_args(brain.Status))
    assert {a.value for a in wire.AckState} == set(get_args(brain.AckState))


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        brain().handle(COUNTY_TOPIC, sign(alert()), datetime(2026, 7, 1, 8, 0))


# -- signatures and replays ----------------------------------------------------------------

OTHER_KEY = SigningKey(ALG_ED25519, bytes(range(1, 33)))


def _tampered(message: bytes) -> bytes:
    """The message with one payload character changed: the signature no longer holds."""
    header, payload, signature = message.split(b".")
    flipped = payload[:10] + (b"A" if payload[10:11] != b"A" else b"B") + payload[11:]
    return b".".join([header, flipped, signature])


REFUSALS = [
    ("an unsigned alert", encode(alert()), COUNTY_TOPIC, "unsigned"),
    ("an unsigned command", b'{"v":1,"cmd":"reboot"}', CMD_TOPIC, "unsigned"),
    ("an alert signed by an unknown key", sign(alert(), OTHER_KEY), COUNTY_TOPIC,
     f"unknown key {OTHER_KEY.kid}"),
    ("a tampered alert", _tampered(sign(alert())), COUNTY_TOPIC, "bad signature"),
    ("a JWS cut short", sign(alert()).rpartition(b".")[0], COUNTY_TOPIC, "malformed"),
]  # fmt: skip


@pytest.mark.parametrize(("payload", "topic", "reason"), [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])  # fmt: skip
def test_a_message_that_does_not_verify_is_refused_reported_and_never_acked(
    payload: bytes, topic: str, reason: str
) -> None:
    b = brain()
    now = T0 + timedelta(minutes=1)
    (refused,) = b.handle(topic, payload, now)
    assert isinstance(refused, Rejected)
    assert isinstance(refused, Dropped)  # what logs and counts drops sees it too
    assert refused.reason.startswith(reason)
    assert refused.at == now
    assert refused.topic == topic
    assert len(b) == 0  # nothing of it was remembered
    # A genuine copy that comes after still plays: a refusal poisons nothing.
    assert deliver(b, alert()) == ["ack a1 received", "play a1"]


def test_a_refusal_names_the_key_the_message_claimed() -> None:
    (refused,) = brain().handle(COUNTY_TOPIC, sign(alert(), OTHER_KEY), T0)
    assert isinstance(refused, Rejected)
    assert refused.kid == OTHER_KEY.kid


def test_a_brain_without_a_keyring_refuses_everything() -> None:
    assert deliver(brain(verify=None), alert()) == ["reject no keyring configured"]


def test_a_retired_key_is_accepted_during_its_overlap_only() -> None:
    retire_at = T0 + timedelta(minutes=10)
    ring = Keyring([KEY.public(not_after=retire_at)])
    assert deliver(brain(verify=ring.verify), alert(), now=retire_at - timedelta(seconds=1)) == [
        "ack a1 received",
        "play a1",
    ]
    assert deliver(brain(verify=ring.verify), alert(), now=retire_at) == [
        f"reject key {KEY.kid} retired at {retire_at.isoformat()}"
    ]


REPLAYS = [
    ("sent just over 24 h ago", T0 + timedelta(hours=24, seconds=1), "more than 24 h ago"),
    ("sent over 5 min ahead", T0 - timedelta(minutes=5, seconds=1), "more than 5 min ahead"),
]  # fmt: skip


@pytest.mark.parametrize(("now", "reason"), [r[1:] for r in REPLAYS],
                         ids=[r[0] for r in REPLAYS])  # fmt: skip
def test_a_signed_alert_sent_outside_the_window_is_refused_as_a_replay(
    now: datetime, reason: str
) -> None:
    b = brain()
    body = alert(expires=(T0 + timedelta(days=3)).isoformat())
    (refused,) = b.handle(COUNTY_TOPIC, sign(body), now)
    assert isinstance(refused, Rejected)
    assert refused.reason == f"replay: sent 2026-07-01T08:00:00.000+08:00 is {reason}"
    assert refused.alert_id == "a1"
    assert len(b) == 0


@pytest.mark.parametrize(
    "now", [T0 + timedelta(hours=24), T0 - timedelta(minutes=5)], ids=["24 h", "5 min ahead"]
)
def test_the_edges_of_the_replay_window_are_inside_it(now: datetime) -> None:
    body = alert(expires=(T0 + timedelta(days=3)).isoformat())
    assert deliver(brain(), body, now=now) == ["ack a1 received", "play a1"]


def test_the_replay_window_is_configurable() -> None:
    b = brain(max_age=timedelta(minutes=30), skew=timedelta(seconds=0))
    assert deliver(b, alert("a1"), now=T0 + timedelta(minutes=31))[0].startswith(
        "reject replay: sent 2026-07-01T08:00:00.000+08:00 is more than 30 min ago"
    )
    ahead = alert("a2", sent=T0 + timedelta(seconds=1))
    assert deliver(b, ahead, now=T0) == [
        "reject replay: sent 2026-07-01T08:00:01.000+08:00 is more than 0 s ahead"
    ]


def test_a_verbatim_replay_inside_the_window_repeats_the_ack_and_never_plays_again() -> None:
    b = brain()
    message = sign(alert())
    first = summary(b.handle(COUNTY_TOPIC, message, T0 + timedelta(minutes=1)))
    assert first == ["ack a1 received", "play a1"]
    again = summary(b.handle(COUNTY_TOPIC, message, T0 + timedelta(hours=2)))
    assert again == ["ack a1 received (repeat)"]


def test_a_signed_command_is_verified_then_judged() -> None:
    assert deliver(brain(), b'{"v":1,"cmd":"reboot"}', topic=CMD_TOPIC) == ["drop unknown command"]


def test_brains_sharing_a_caching_verifier_each_check_their_own_clock() -> None:
    retire_at = T0 + timedelta(minutes=10)
    shared = CachingVerifier(Keyring([KEY.public(not_after=retire_at)]))
    early, late = brain(verify=shared), brain(verify=shared)
    message = sign(alert())
    assert summary(early.handle(COUNTY_TOPIC, message, T0 + timedelta(minutes=1)))[0] == (
        "ack a1 received"
    )
    (refused,) = late.handle(COUNTY_TOPIC, message, retire_at)
    assert isinstance(refused, Rejected)
    assert refused.reason.startswith(f"key {KEY.kid} retired")


def test_the_state_report_of_a_refusal_keeps_the_state_fields() -> None:
    refused = Rejected(CMD_TOPIC, "bad signature", kid="ed25519-00", at=T0)
    report = json.loads(state_payload("online", ZHONGSHAN, "fw/1", T0, rejected=refused))
    assert report == {
        "v": 1,
        "state": "online",
        "region": ZHONGSHAN,
        "firmware": "fw/1",
        "at": "2026-07-01T08:00:00.000+08:00",
        "rejected": {
            "reason": "bad signature",
            "kid": "ed25519-00",
            "topic": CMD_TOPIC,
            "alert_id": None,
            "at": "2026-07-01T08:00:00.000+08:00",
        },
    }


# -- what is spoken: cancels, English, what a loudspeaker cannot say ------------------------


def spoken_after(steps: list[dict[str, Any]]) -> list[str]:
    """The texts of the Play actions the last step gives, after the steps before it."""
    b = brain()
    for step in steps[:-1]:
        b.handle(COUNTY_TOPIC, sign(step), T0 + timedelta(minutes=6))
    actions = b.handle(COUNTY_TOPIC, sign(steps[-1]), T0 + timedelta(minutes=6))
    return [action.text for action in actions if isinstance(action, Play)]


def test_a_cancel_is_announced_with_the_headline_of_what_it_lifts() -> None:
    lifted = cancel("c1", ["a1"], T0 + 5 * M) | {"headline": None, "text": None}
    assert spoken_after([alert("a1"), lifted]) == ["【解除】福州市台风红色预警，现已解除。"]


def test_a_cancel_with_its_own_headline_says_it() -> None:
    own = cancel("c1", ["a1"], T0 + 5 * M) | {"headline": "台风警报。", "status": "exercise"}
    assert spoken_after([own]) == ["演练：【解除】台风警报，现已解除。"]


def test_a_cancel_of_an_unknown_alert_is_still_announced() -> None:
    bare = cancel("c1", ["a0"], T0 + 5 * M) | {"headline": None, "text": None}
    assert spoken_after([bare]) == ["【解除】此前发布的预警现已解除。"]


def test_an_english_alert_and_its_cancel_are_spoken_in_english() -> None:
    english = alert(
        "a1",
        severity="orange",
        headline="Rainstorm warning for Gulou",
        text="Heavy rain in the next 6 hours",
        instruction="Keep away from low ground!",
    )
    assert spoken_after([english]) == [
        "Orange warning. Rainstorm warning for Gulou. Heavy rain in the next 6 hours. "
        "Keep away from low ground!"
    ]
    lifted = cancel("c1", ["a1"], T0 + 5 * M) | {"headline": None, "text": None}
    assert spoken_after([english, lifted]) == [
        "Cancelled: Rainstorm warning for Gulou. The warning is lifted."
    ]


def test_emoji_and_invisible_characters_are_not_spoken() -> None:
    noisy = alert("a1") | {
        "headline": "⚠️台风\u200d红色预警🌀",
        "text": "气温38℃，风力\ufe0f12级\ue000",
        "instruction": "请转移👨‍👩‍👧",
    }
    assert spoken_after([noisy]) == ["红色预警。台风红色预警。气温38℃，风力12级。请转移。"]


def test_a_text_of_emoji_alone_says_the_rest() -> None:
    assert spoken_after([alert("a1", headline="🌀🌀", instruction="")]) == [
        "红色预警。预计未来24小时内将出现12级以上大风。"
    ]
