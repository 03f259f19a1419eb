"""The edge models: alert requests, issued alerts and their MQTT payload, acks, terminals."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.loudspeaker.payload import alert_payload
from dispatcher.core.config import OfficeConfig
from dispatcher.core.models import (
    Ack,
    Alert,
    AlertRequest,
    Channel,
    MsgType,
    Severity,
    Status,
    TerminalIn,
    TerminalKind,
)
from dispatcher.core.wire import ALERT_ID_PATTERN, AckState
from tests.helpers import alert_body

CST = timezone(timedelta(hours=8))


def in_hours(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def error_locs(exc: ValidationError) -> list[tuple[int | str, ...]]:
    return [tuple(error["loc"]) for error in exc.errors()]


# --- AlertRequest ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "check"),
    [
        ({}, lambda r: r.expires_in == 3600 and r.expires is None),
        ({"event_code": None}, lambda r: r.event_code is None),
        ({"instruction": None}, lambda r: r.instruction is None),
        ({"expires_in": None, "expires": in_hours(2)}, lambda r: r.expires is not None),
        ({"expires_in": 60}, lambda r: r.expires_in == 60),
        ({"expires_in": 7 * 86400}, lambda r: r.expires_in == 7 * 86400),
        ({}, lambda r: r.channels == [Channel.LOUDSPEAKER]),
        (
            {},
            lambda r: (r.status, r.msg_type, r.references, r.repeat) == ("actual", "alert", [], 3),
        ),
        (
            {"channels": ["sms", "loudspeaker", "sms"]},
            lambda r: r.channels == [Channel.SMS, Channel.LOUDSPEAKER],
        ),
        (
            {"areas": ["35", "3501", "350102", "350102001", "350102001001"]},
            lambda r: len(r.areas) == 5,
        ),
        ({"areas": [" 3501 "]}, lambda r: r.areas == ["3501"]),
        ({"areas": ["35"] * 500}, lambda r: len(r.areas) == 500),
        ({"headline": "  台风  "}, lambda r: r.headline == "台风"),
        ({"severity": "blue", "status": "exercise"}, lambda r: r.status is Status.EXERCISE),
        (
            {"msg_type": "update", "references": ["fj-province-20261127T051500Z-3f9a1c2b"]},
            lambda r: r.msg_type is MsgType.UPDATE,
        ),
        ({"msg_type": "cancel", "references": ["a1"]}, lambda r: r.msg_type is MsgType.CANCEL),
        ({"repeat": 1}, lambda r: r.repeat == 1),
        ({"repeat": 10}, lambda r: r.repeat == 10),
        ({"headline": "h" * 120, "text": "t" * 1000}, lambda r: len(r.text) == 1000),
    ],
)
def test_a_good_alert_request_is_accepted(fields: dict[str, Any], check: Any) -> None:
    assert check(AlertRequest.model_validate(alert_body(**fields)))


@pytest.mark.parametrize(
    ("fields", "loc", "fragment"),
    [
        ({"event": ""}, ("event",), "at least 1"),
        ({"event": "e" * 65}, ("event",), "at most 64"),
        ({"event": None}, ("event",), "required"),
        ({"event_code": "11b01"}, ("event_code",), "GB/T 35561"),
        ({"event_code": "1B01"}, ("event_code",), "GB/T 35561"),
        ({"severity": "Extreme"}, ("severity",), "'red'"),
        ({"severity": None}, ("severity",), "required"),
        ({"headline": "   "}, ("headline",), "at least 1"),
        ({"headline": "h" * 121}, ("headline",), "at most 120"),
        ({"text": "t" * 1001}, ("text",), "at most 1000"),
        ({"instruction": "i" * 501}, ("instruction",), "at most 500"),
        ({"areas": []}, ("areas",), "at least 1"),
        ({"areas": "350102"}, ("areas",), "list"),
        ({"areas": ["35"] * 501}, ("areas",), "at most 500"),
        ({"areas": ["3501x"]}, ("areas",), "malformed"),
        ({"areas": ["350"]}, ("areas",), "malformed"),
        ({"areas": ["35", "35010200100"]}, ("areas",), "35010200100"),
        ({"areas": ["35 01"]}, ("areas",), "malformed"),
        pytest.param({"areas": ["３５０１"]}, ("areas",), "malformed", id="full-width-digits"),
        ({"areas": ["3"]}, ("areas", 0), "at least 2"),
        ({"areas": [3501]}, ("areas", 0), "string"),
        ({"channels": []}, ("channels",), "at least 1"),
        ({"channels": ["fax"]}, ("channels", 0), "'loudspeaker'"),
        ({"expires_in": None}, (), "exactly one of expires"),
        ({"expires": in_hours(1)}, (), "exactly one of expires"),
        ({"expires_in": 59}, ("expires_in",), "60"),
        ({"expires_in": 7 * 86400 + 1}, ("expires_in",), "604800"),
        ({"expires_in": 3600.5}, ("expires_in",), "integer"),
        ({"expires_in": None, "expires": "2030-01-01T00:00:00"}, ("expires",), "timezone"),
        ({"expires_in": None, "expires": in_hours(-1)}, (), "in the future"),
        ({"expires_in": None, "expires": in_hours(7 * 24 + 1)}, (), "at most 7 days"),
        ({"status": "real"}, ("status",), "'actual'"),
        ({"msg_type": "update"}, (), "references"),
        ({"msg_type": "cancel"}, (), "references"),
        ({"references": ["a1"]}, (), "update or cancel"),
        ({"msg_type": "cancel", "references": ["a/1"]}, ("references", 0), "pattern"),
        ({"msg_type": "cancel", "references": ["a1"] * 21}, ("references",), "at most 20"),
        ({"repeat": 0}, ("repeat",), "greater than or equal to 1"),
        ({"repeat": 11}, ("repeat",), "less than or equal to 10"),
        ({"sender": "fj-province"}, ("sender",), "Extra inputs"),
    ],
)
def test_a_bad_alert_request_names_the_field(
    fields: dict[str, Any], loc: tuple[int | str, ...], fragment: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        AlertRequest.model_validate(alert_body(**fields))
    errors = caught.value.errors()
    assert [tuple(e["loc"]) for e in errors] == [loc]
    assert fragment in errors[0]["msg"]


# --- Alert.issue -----------------------------------------------------------------------------


def issue(sent: datetime | None = None, office_id: str = "fj-province", **fields: Any) -> Alert:
    request = AlertRequest.model_validate(alert_body(**fields))
    return Alert.issue(
        request, office_id=office_id, office_name="福建省应急管理厅", areas=["350102"], sent=sent
    )


def test_an_issued_alert_id_is_office_utc_stamp_and_random_suffix() -> None:
    sent = datetime(2026, 11, 27, 13, 15, 0, 987654, tzinfo=CST)
    alert = issue(sent)
    assert re.fullmatch(r"fj-province-20261127T051500Z-[0-9a-f]{8}", alert.id)
    assert re.fullmatch(ALERT_ID_PATTERN, alert.id)
    assert issue(sent).id != alert.id


def test_an_issued_alert_takes_sender_and_fields_from_the_request() -> None:
    alert = issue(severity="orange", channels=["sms"], repeat=5, status="test")
    assert (alert.sender, alert.sender_name) == ("fj-province", "福建省应急管理厅")
    assert alert.areas == ["350102"]
    assert (alert.severity, alert.channels, alert.repeat) == (Severity.ORANGE, [Channel.SMS], 5)
    assert (alert.status, alert.msg_type) == (Status.TEST, MsgType.ALERT)
    assert (alert.event, alert.event_code, alert.headline) == ("台风", "11B01", "台风红色预警")


def test_an_issued_alert_is_sent_at_millisecond_precision() -> None:
    sent = datetime(2026, 11, 27, 5, 15, 0, 123456, tzinfo=UTC)
    alert = issue(sent)
    assert alert.sent == datetime(2026, 11, 27, 5, 15, 0, 123000, tzinfo=UTC)
    assert alert.sent.microsecond % 1000 == 0


def test_an_issued_alert_expires_expires_in_seconds_after_it_was_sent() -> None:
    sent = datetime(2026, 11, 27, 5, 15, 0, 123456, tzinfo=UTC)
    alert = issue(sent, expires_in=900)
    assert alert.expires - alert.sent == timedelta(seconds=900)
    assert alert.expires == datetime(2026, 11, 27, 5, 30, 0, 123000, tzinfo=UTC)


def test_an_issued_alert_keeps_an_explicit_expiry() -> None:
    expires = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    alert = issue(expires_in=None, expires=expires.isoformat())
    assert alert.expires == expires


def test_an_issued_alert_without_a_sent_time_is_sent_now_and_timezone_aware() -> None:
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    alert = issue()
    after = datetime.now(UTC)
    assert alert.sent.tzinfo is not None
    assert alert.expires.tzinfo is not None
    assert alert.sent.utcoffset() == timedelta(0)
    assert before <= alert.sent <= after
    assert not alert.expired()
    assert alert.expired(alert.expires)


def test_an_alert_cannot_be_issued_with_a_naive_sent_time() -> None:
    with pytest.raises(ValidationError) as caught:
        issue(datetime(2026, 11, 27, 5, 15))
    assert ("sent",) in error_locs(caught.value)


def test_an_alert_that_expires_before_it_is_sent_is_refused() -> None:
    alert = issue()
    data = alert.model_dump() | {"expires": alert.sent}
    with pytest.raises(ValidationError, match="expires must be after sent"):
        Alert.model_validate(data)


def test_an_issued_alert_round_trips_through_json() -> None:
    alert = issue(msg_type="update", references=["fj-province-20261127T051500Z-3f9a1c2b"])
    assert Alert.model_validate_json(alert.model_dump_json()) == alert


def test_any_valid_office_id_gives_a_valid_alert_id() -> None:
    """The longest office id settings allow must still give an alert id that fits
    ALERT_ID_PATTERN, or issuing from that office would fail with a ValidationError (a 500)."""
    office_id = OfficeConfig(id="o" * 48, name="n", region="35", token_sha256="0" * 64).id
    alert = issue(office_id=office_id)
    assert alert.id.startswith(office_id + "-")
    with pytest.raises(ValidationError, match="1 to 48"):
        OfficeConfig(id="o" * 49, name="n", region="35", token_sha256="0" * 64)


# --- the MQTT alert payload (DESIGN.md "Alert payload") --------------------------------------

PAYLOAD_KEYS = {
    "v",
    "id",
    "msg_type",
    "status",
    "severity",
    "event",
    "event_code",
    "headline",
    "text",
    "instruction",
    "sent",
    "expires",
    "areas",
    "references",
    "repeat",
    "audio",
}


def test_the_alert_payload_has_exactly_the_contract_keys() -> None:
    assert set(alert_payload(issue())) == PAYLOAD_KEYS


def test_the_alert_payload_values_follow_the_contract() -> None:
    sent = datetime(2026, 11, 27, 13, 15, 0, 500000, tzinfo=CST)
    alert = issue(sent, severity="yellow", status="exercise", repeat=2, instruction=None)
    payload = json.loads(json.dumps(alert_payload(alert), ensure_ascii=False))
    assert payload == {
        "v": 1,
        "id": alert.id,
        "msg_type": "alert",
        "status": "exercise",
        "severity": "yellow",
        "event": "台风",
        "event_code": "11B01",
        "headline": "台风红色预警",
        "text": "预计未来24小时将有12级以上大风。",
        "instruction": None,
        "sent": "2026-11-27T13:15:00.500000+08:00",
        "expires": "2026-11-27T14:15:00.500000+08:00",
        "areas": ["350102"],
        "references": [],
        "repeat": 2,
        "audio": None,
    }
    for key in ("sent", "expires"):
        parsed = datetime.fromisoformat(payload[key])
        assert parsed.tzinfo is not None  # ISO 8601 with offset
    assert datetime.fromisoformat(payload["sent"]) == alert.sent


@pytest.mark.parametrize("msg_type", ["update", "cancel"])
def test_an_update_or_cancel_payload_names_what_it_replaces(msg_type: str) -> None:
    replaced = "fj-province-20261127T051500Z-3f9a1c2b"
    payload = alert_payload(issue(msg_type=msg_type, references=[replaced]))
    assert (payload["msg_type"], payload["references"]) == (msg_type, [replaced])


# --- Severity <-> CAP ------------------------------------------------------------------------

SEVERITY_CAP = [
    (Severity.RED, "Extreme", "红色预警"),
    (Severity.ORANGE, "Severe", "橙色预警"),
    (Severity.YELLOW, "Moderate", "黄色预警"),
    (Severity.BLUE, "Minor", "蓝色预警"),
]


@pytest.mark.parametrize(("severity", "cap", "label"), SEVERITY_CAP)
def test_severity_maps_to_cap_and_back(severity: Severity, cap: str, label: str) -> None:
    assert severity.cap == cap
    assert Severity.from_cap(cap) is severity
    assert severity.label_zh == label


def test_every_severity_has_a_cap_value() -> None:
    assert {s.cap for s in Severity} == {cap for _, cap, _ in SEVERITY_CAP}


@pytest.mark.parametrize("cap", ["Unknown", "extreme", "EXTREME", "", "red"])
def test_a_cap_severity_without_a_colour_is_a_value_error_naming_it(cap: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"CAP severity {cap!r} has no warning colour")):
        Severity.from_cap(cap)


# --- Ack -------------------------------------------------------------------------------------


def ack_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"v": 1, "alert_id": "fj-province-20261127T051500Z-3f9a1c2b"}
    body |= {"state": "played", "at": "2026-11-27T13:15:03.250+08:00"}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize("state", list(AckState))
def test_an_ack_in_every_state_is_accepted(state: AckState) -> None:
    ack = Ack.model_validate(ack_body(state=state.value))
    assert ack.state is state
    assert ack.at == datetime(2026, 11, 27, 5, 15, 3, 250000, tzinfo=UTC)


@pytest.mark.parametrize(
    "extra",
    [{"firmware": "2.1.0"}, {"terminal_id": "t1"}, {"volume": 80, "battery": {"pct": 91}}],
)
def test_an_ack_tolerates_unknown_keys_from_other_firmware(extra: dict[str, Any]) -> None:
    ack = Ack.model_validate(ack_body(**extra))
    assert ack.model_dump().keys() == {"v", "alert_id", "state", "at", "detail"}


def test_an_ack_detail_may_be_200_characters() -> None:
    assert Ack.model_validate(ack_body(state="failed", detail="d" * 200)).detail == "d" * 200


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"v": 2}, ("v",)),
        ({"v": 0}, ("v",)),
        ({"v": "1"}, ("v",)),
        ({"v": None}, ("v",)),
        ({"alert_id": None}, ("alert_id",)),
        ({"alert_id": "a/1"}, ("alert_id",)),
        ({"alert_id": "a" * 81}, ("alert_id",)),
        ({"alert_id": "#"}, ("alert_id",)),
        ({"state": "PLAYED"}, ("state",)),
        ({"state": "cancelled"}, ("state",)),
        ({"state": None}, ("state",)),
        ({"at": "2026-11-27T05:15:03"}, ("at",)),
        ({"at": "yesterday"}, ("at",)),
        ({"at": None}, ("at",)),
        ({"detail": "d" * 201}, ("detail",)),
    ],
)
def test_a_bad_ack_names_the_field(fields: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        Ack.model_validate(ack_body(**fields))
    assert error_locs(caught.value) == [loc]


# --- TerminalIn ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"id": "t1", "region": "350102001001"}, ("t1", "350102001001", "loudspeaker")),
        ({"id": "gl-1.a_2", "region": "35", "kind": "display"}, ("gl-1.a_2", "35", "display")),
        ({"id": "T" * 64, "region": "350102", "kind": "monitor"}, ("T" * 64, "350102", "monitor")),
        ({"id": " t1 ", "region": " 3501 "}, ("t1", "3501", "loudspeaker")),
        ({"id": "0", "region": "350102001"}, ("0", "350102001", "loudspeaker")),
    ],
)
def test_a_good_terminal_is_accepted(item: dict[str, str], expected: tuple[str, ...]) -> None:
    terminal = TerminalIn.model_validate(item)
    assert (terminal.id, terminal.region, terminal.kind) == expected
    assert isinstance(terminal.kind, TerminalKind)


@pytest.mark.parametrize(
    ("item", "loc"),
    [
        # An id is an MQTT topic level and client id: no '/', no wildcards, no spaces.
        ({"id": "t/1"}, ("id",)),
        ({"id": "t+1"}, ("id",)),
        ({"id": "t#1"}, ("id",)),
        ({"id": "+"}, ("id",)),
        ({"id": "#"}, ("id",)),
        ({"id": "t 1"}, ("id",)),
        ({"id": "t\t1"}, ("id",)),
        ({"id": ""}, ("id",)),
        ({"id": "-t1"}, ("id",)),
        ({"id": "t" * 65}, ("id",)),
        ({"id": "终端1"}, ("id",)),
        ({"id": 17}, ("id",)),
        ({"region": "3501x"}, ("region",)),
        ({"region": "350"}, ("region",)),
        ({"region": "35010200100"}, ("region",)),
        ({"region": "3501020010011"}, ("region",)),
        ({"region": "35 01"}, ("region",)),
        ({"region": ""}, ("region",)),
        pytest.param({"region": "３５"}, ("region",), id="full-width-province"),
        pytest.param({"region": "３５０１０２"}, ("region",), id="full-width-county"),
        ({"region": 3501}, ("region",)),
        ({"kind": "siren"}, ("kind",)),
        ({"owner": "fz-gulou"}, ("owner",)),
    ],
)
def test_a_bad_terminal_names_the_field(item: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        TerminalIn.model_validate({"id": "t1", "region": "350102001001"} | item)
    assert error_locs(caught.value) == [loc]
