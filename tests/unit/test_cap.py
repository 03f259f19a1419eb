"""CAP 1.2 in: hostile and malformed XML refused, the schema's errors named by element and
line, the real samples imported or refused for the right reason, and the mapping of a Chinese
warning to an alert request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dispatcher.core.cap_in import CapAlert, parse_cap
from dispatcher.core.cap_schema import (
    MAX_CAP_BYTES,
    CapError,
    CapTooLarge,
    is_signed,
    read_valid_cap,
)
from dispatcher.core.errors import ValidationFailed
from dispatcher.core.models import MsgType, Severity, Status
from tests.helpers import ROOT, fujian
from tests.support.cap_attacks import BILLION_LAUGHS, XXE

DATA = ROOT / "tests" / "data" / "cap"
CST = timezone(timedelta(hours=8))


def later(hours: int = 6) -> str:
    return (datetime.now(CST) + timedelta(hours=hours)).replace(microsecond=0).isoformat()


AREA = """    <area>
      <areaDesc>鼓楼区</areaDesc>
      <geocode>
        <valueName>GB/T 2260</valueName>
        <value>350102</value>
      </geocode>
    </area>
"""


def cap_doc(
    *,
    status: str = "Actual",
    msg_type: str = "Alert",
    references: str = "",
    severity: str = "Extreme",
    headline: str = "福州市气象台发布台风红色预警信号",
    description: str = "受台风影响，预计未来24小时内鼓楼区将出现12级以上大风，请注意防范。",
    expires: str | None = None,
    areas: str = AREA,
    extra_info: str = "",
    first_info: str = "",
) -> bytes:
    """A CAP 1.2 red typhoon warning for 鼓楼区 (350102); severity is on line 14."""
    refs = f"  <references>{references}</references>\n" if references else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>35000041600000-20261206-0001</identifier>
  <sender>fzqxt@fjmb.cn</sender>
  <sent>2026-12-06T20:30:00+08:00</sent>
  <status>{status}</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>
{refs}{first_info}  <info>
    <language>zh-CN</language>
    <category>Met</category>
    <event>台风</event>
    <urgency>Immediate</urgency>
    <severity>{severity}</severity>
    <certainty>Likely</certainty>
    <eventCode>
      <valueName>GB/T 35965.1</valueName>
      <value>11B01</value>
    </eventCode>
    <expires>{expires or later()}</expires>
    <senderName>福州市气象台</senderName>
    <headline>{headline}</headline>
    <description>{description}</description>
    <instruction>请立即停止户外作业，转移至安全场所。</instruction>
{areas}  </info>
{extra_info}</alert>
""".encode()


def refusal(data: bytes) -> CapError:
    with pytest.raises(CapError) as caught:
        parse_cap(data).to_request(known_region=fujian().__contains__)
    return caught.value


# --- hostile and malformed documents -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "said"),
    [
        pytest.param(BILLION_LAUGHS, "DOCTYPE ('lolz') is not accepted", id="billion-laughs"),
        pytest.param(XXE, "external references are never processed", id="xxe"),
        pytest.param(b'{"event": "typhoon"}', "not well-formed XML", id="json"),
        pytest.param(b"<alert><identifier>x</alert>", "not well-formed XML", id="mismatched"),
        pytest.param(b"", "not well-formed XML", id="empty"),
        pytest.param(
            cap_doc().replace(b"emergency:cap:1.2", b"emergency:cap:1.1"),
            "this is CAP 1.1",
            id="cap-1.1",
        ),
        pytest.param(
            cap_doc().replace(b"urn:oasis:names:tc:emergency:cap:1.2", b"urn:example:alerts"),
            "not CAP 1.2's alert",
            id="other-namespace",
        ),
    ],
)
def test_hostile_or_malformed_xml_is_refused_before_anything_is_read(
    data: bytes, said: str
) -> None:
    error = refusal(data)
    assert said in error.message
    assert isinstance(error, ValidationFailed)  # the API's 422, with details
    assert error.details[0]["message"] == error.reason


def test_xxe_never_reads_the_file() -> None:
    error = refusal(XXE)
    assert "root:" not in error.message
    assert error.line == 2  # the DOCTYPE


def test_an_oversized_document_is_refused_unread() -> None:
    data = cap_doc(description="大风" * (MAX_CAP_BYTES // 4))
    with pytest.raises(CapTooLarge, match=f"the limit is {MAX_CAP_BYTES} bytes") as caught:
        parse_cap(data)
    assert caught.value.status == 413


def test_a_bad_severity_is_named_by_element_and_line() -> None:
    error = refusal(cap_doc(severity="Catastrophic"))
    assert error.element == "/alert/info[1]/severity"
    assert error.line == 14
    assert "value must be one of" in error.message
    assert "/alert/info[1]/severity, line 14" in error.message


def test_the_schema_error_of_the_second_info_names_its_position() -> None:
    second = (
        "  <info>\n    <language>en-US</language>\n    <category>Met</category>\n"
        "    <event>Typhoon</event>\n    <urgency>Soon</urgency>\n"
        "    <severity>Extreme</severity>\n"
        "    <certainty>Likely</certainty>\n  </info>\n"
    )
    error = refusal(cap_doc(extra_info=second))
    assert error.element == "/alert/info[2]/urgency"
    assert error.line == 37


# --- the real samples ----------------------------------------------------------------------

REFUSED_SAMPLES = {
    # missing scope: the schema finds info where scope must be
    "google-invalid.cap.xml": ("/alert/info[1]", 9, "Tag 'scope' expected"),
    # an Update with empty references: schema-valid, refused by meaning
    "google-canada_errors.cap.xml": ("/alert/references", 12, "must name in <references>"),
    "google-earthquake.cap.xml": ("/alert", 3, "this is CAP 1.1"),
    "google-earthquake_signed.cap.xml": ("/alert", 1, "this is CAP 1.1"),
}
# The foreign samples parse; none gives its areas by GB/T 2260 code, so none is issued.
FOREIGN_SAMPLES = {
    "google-australia.cap.xml": ("/alert/info[1]/area[1]", "given only as a circle"),
    "google-canada.cap.xml": ("/alert/info[1]/area[1]", "given only as a polygon and geocodes"),
    "google-canada_signed.cap.xml": ("/alert/info[1]/area[1]", "given only as a polygon"),
    "tannerryan-Oasis_AmberAlert.xml": ("/alert/info[1]/area[1]", "given only as geocodes SAME"),
    "tannerryan-Oasis_EarthquakeReport.xml": ("/alert/info[1]/area[1]", "given only as a circle"),
    "tannerryan-Oasis_HomelandAlert.xml": ("/alert/info[1]/area[1]", "only as a description"),
    "tannerryan-Oasis_ThunderstormWarning.xml": ("/alert/info[1]/area[1]", "only as a polygon"),
    "tannerryan-PelmorexNAADS_WindWarning.xml": ("/alert/info[1]/area[1]", "only as a polygon"),
}


def test_every_sample_is_in_one_of_the_tables() -> None:
    names = {path.name for path in DATA.glob("*.xml")}
    assert names == set(REFUSED_SAMPLES) | set(FOREIGN_SAMPLES)


@pytest.mark.parametrize(("name", "expected"), REFUSED_SAMPLES.items())
def test_invalid_samples_are_refused_with_element_and_line(
    name: str, expected: tuple[str, int, str]
) -> None:
    element, line, said = expected
    error = refusal((DATA / name).read_bytes())
    assert (error.element, error.line) == (element, line)
    assert said in error.message


@pytest.mark.parametrize(("name", "expected"), FOREIGN_SAMPLES.items())
def test_foreign_samples_parse_but_their_areas_are_refused(
    name: str, expected: tuple[str, str]
) -> None:
    element, said = expected
    alert = parse_cap((DATA / name).read_bytes())
    assert alert.event
    assert alert.areas
    error = refusal((DATA / name).read_bytes())
    assert error.element == element
    assert said in error.message
    assert "GB/T 2260" in error.message  # says what to add


def test_the_canadian_update_gives_its_reference_triples_and_both_languages() -> None:
    alert = parse_cap((DATA / "google-canada.cap.xml").read_bytes())
    assert alert.msg_type is MsgType.UPDATE
    assert [(r.sender, r.identifier) for r in alert.references] == [
        ("cap@ec.gc.ca", "2.49.0.1.124.a3f342a4.2012"),
        ("cap@ec.gc.ca", "2.49.0.1.124.60f31a3a.2012"),
    ]
    assert alert.references[0].sent == datetime(2012, 5, 2, 21, 45, 5, tzinfo=UTC)
    assert (alert.language, list(alert.translations)) == ("en-CA", ["fr-CA"])
    assert alert.severity is Severity.BLUE  # Minor
    assert (alert.urgency, alert.certainty) == ("Past", "Observed")
    assert alert.expires == datetime(2012, 5, 3, 0, 20, tzinfo=UTC)
    assert not alert.signed


def test_the_naads_sample_keeps_its_languages_and_signature_flag() -> None:
    data = (DATA / "tannerryan-PelmorexNAADS_WindWarning.xml").read_bytes()
    alert = parse_cap(data)
    assert alert.signed
    assert is_signed(data)
    assert alert.language == "fr-CA"  # no Chinese: the first info is the main text
    assert alert.event == "vent"
    assert alert.translations["en-CA"].headline is not None
    assert "wind" in (alert.translations["en-CA"].headline or "").lower()
    assert len(alert.references) == 3
    assert alert.severity is Severity.YELLOW  # Moderate


def test_the_oasis_fields_map_to_the_engine_values() -> None:
    alert = parse_cap((DATA / "tannerryan-Oasis_ThunderstormWarning.xml").read_bytes())
    assert (alert.status, alert.msg_type, alert.severity) == (
        Status.ACTUAL,
        MsgType.ALERT,
        Severity.ORANGE,
    )
    assert alert.event == "SEVERE THUNDERSTORM"
    assert alert.headline == "SEVERE THUNDERSTORM WARNING"
    assert alert.expires == datetime(2003, 6, 17, 16, tzinfo=timezone(timedelta(hours=-7)))
    assert alert.event_code is None  # SAME codes are no GB/T 35561 code
    assert alert.areas[0].polygons == 1
    assert alert.areas[0].other_geocodes == ("SAME",)


def test_a_schema_valid_sample_reads_as_a_document() -> None:
    doc = read_valid_cap((DATA / "google-canada_signed.cap.xml").read_bytes())
    assert doc.signed  # a lax xmldsig Signature is no schema error


# --- a Chinese warning ---------------------------------------------------------------------


def test_a_chinese_warning_maps_to_an_alert_request() -> None:
    expires = later(12)
    alert = parse_cap(cap_doc(expires=expires))
    request = alert.to_request(known_region=fujian().__contains__)
    assert isinstance(alert, CapAlert)
    assert alert.sender == "fzqxt@fjmb.cn"
    assert alert.sent == datetime(2026, 12, 6, 12, 30, tzinfo=UTC)
    assert alert.sender_name == "福州市气象台"
    assert request.event == "台风"
    assert request.event_code == "11B01"
    assert request.severity is Severity.RED
    assert request.headline == "福州市气象台发布台风红色预警信号"
    assert request.text.startswith("受台风影响")
    assert request.instruction == "请立即停止户外作业，转移至安全场所。"
    assert request.areas == ["350102"]
    assert request.expires == datetime.fromisoformat(expires)
    assert (request.status, request.msg_type) == (Status.ACTUAL, MsgType.ALERT)


def test_the_chinese_info_is_chosen_and_the_english_kept() -> None:
    english = (
        "  <info>\n    <language>en-US</language>\n    <category>Met</category>\n"
        "    <event>Typhoon</event>\n    <urgency>Immediate</urgency>\n"
        "    <severity>Extreme</severity>\n    <certainty>Likely</certainty>\n"
        "    <headline>Typhoon red warning</headline>\n  </info>\n"
    )
    # The English info first: the Chinese one is still the main text.
    alert = parse_cap(cap_doc(first_info=english))
    assert alert.language == "zh-CN"
    assert alert.headline == "福州市气象台发布台风红色预警信号"
    assert alert.translations["en-US"].headline == "Typhoon red warning"
    assert alert.translations["en-US"].text is None
    assert parse_cap(cap_doc(extra_info=english)).language == "zh-CN"


def test_an_update_references_the_alert_it_replaces() -> None:
    ref = "fzqxt@fjmb.cn,35000041600000-20261206-0000,2026-12-06T19:00:00+08:00"
    alert = parse_cap(cap_doc(msg_type="Update", references=ref))
    assert alert.references[0].identifier == "35000041600000-20261206-0000"
    assert alert.references[0].sent == datetime(2026, 12, 6, 11, tzinfo=UTC)
    request = alert.to_request()
    assert request.references == ["35000041600000-20261206-0000"]
    assert request.msg_type is MsgType.UPDATE
    assert alert.to_request(references=["fz-city-x"]).references == ["fz-city-x"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Actual", Status.ACTUAL),
        ("Exercise", Status.EXERCISE),
        ("Test", Status.TEST),
        ("System", Status.TEST),
    ],
)
def test_statuses_map_to_the_engine_statuses(status: str, expected: Status) -> None:
    alert = parse_cap(cap_doc(status=status))
    assert (alert.status, alert.cap_status) == (expected, status)


POLYGON_ONLY = """    <area>
      <areaDesc>闽江口</areaDesc>
      <polygon>26.0,119.2 26.1,119.3 26.0,119.4 26.0,119.2</polygon>
    </area>
"""
LONG = "台" * 121
# XML 1.0 itself refuses C0 controls (but tab and newline); C1 and bidi controls are the
# engine's to refuse.
C1_CONTROL = "受台风影响\x9b请注意"
BIDI_CONTROL = "受台风影响\u202e请注意"


@pytest.mark.parametrize(
    ("data", "element", "said"),
    [
        pytest.param(cap_doc(status="Draft"), "/alert/status", "a Draft is not issued", id="draft"),
        pytest.param(cap_doc(msg_type="Ack"), "/alert/msgType", "msgType Ack", id="ack"),
        pytest.param(cap_doc(msg_type="Error"), "/alert/msgType", "msgType Error", id="error"),
        pytest.param(
            cap_doc(msg_type="Cancel"), "/alert/msgType", "must name in <references>", id="cancel"
        ),
        pytest.param(
            cap_doc(references="fzqxt@fjmb.cn,only-two", msg_type="Update"),
            "/alert/references",
            "is not sender,identifier,sent",
            id="bad-reference",
        ),
        pytest.param(
            cap_doc(severity="Unknown"),
            "/alert/info[1]/severity",
            "severity Unknown has no warning colour",
            id="unknown-severity",
        ),
        pytest.param(
            cap_doc(areas=POLYGON_ONLY),
            "/alert/info[1]/area[1]",
            "area '闽江口' is given only as a polygon",
            id="polygon-only",
        ),
        pytest.param(
            cap_doc(areas=AREA + POLYGON_ONLY.replace("闽江口", "马尾")),
            "/alert/info[1]/area[2]",
            "area '马尾' is given only as a polygon",
            id="polygon-beside-a-geocode",
        ),
        pytest.param(cap_doc(areas=""), "/alert/info[1]", "the info has no <area>", id="no-area"),
        pytest.param(
            cap_doc(areas=AREA.replace("350102", "3501020")),
            "/alert/info[1]/area[1]/geocode[1]",
            "region '3501020' is malformed",
            id="malformed-geocode",
        ),
        pytest.param(
            cap_doc(areas=AREA.replace("350102", "359999")),
            "/alert/info[1]/area[1]",
            "region code 359999 is not in the engine's region tree",
            id="unknown-region",
        ),
        pytest.param(
            cap_doc(description="受台风影响&#7;请注意"),
            None,  # the parser refuses it, by line (23) alone
            "not well-formed",
            id="control-char-reference",
        ),
        pytest.param(
            cap_doc(description=C1_CONTROL),
            "/alert/info[1]/description",
            "control character U+009B",
            id="c1-control-char",
        ),
        pytest.param(
            cap_doc(headline=BIDI_CONTROL),
            "/alert/info[1]/headline",
            "bidi control character U+202E",
            id="bidi-control-char",
        ),
        pytest.param(
            cap_doc(headline=LONG),
            "/alert/info[1]/headline",
            "at most 120 characters",
            id="headline-too-long",
        ),
        pytest.param(
            cap_doc(expires="2026-12-31T24:00:00+08:00"),
            "/alert/info[1]/expires",
            "time '2026-12-31T24:00:00+08:00' cannot be read",
            id="midnight-as-24h",
        ),
        pytest.param(
            cap_doc(expires="2020-01-01T00:00:00+08:00"),
            "/alert/info[1]/expires",
            "expires must be in the future",
            id="expired",
        ),
    ],
)
def test_what_the_engine_will_not_issue_is_refused_by_element(
    data: bytes, element: str | None, said: str
) -> None:
    error = refusal(data)
    assert said in error.message, error.message
    assert error.element == element
    assert error.line is not None


def test_a_geocode_value_name_is_read_case_and_space_insensitively() -> None:
    for name in ("gb/t 2260", "GB2260", "行政区划代码", "ADCODE", "area_code"):
        data = cap_doc(areas=AREA.replace("GB/T 2260", name))
        assert parse_cap(data).to_request().areas == ["350102"], name


def test_a_message_without_expires_gets_the_engine_default() -> None:
    data = cap_doc().replace(b"<expires>", b"<!--").replace(b"</expires>", b"-->")
    request = parse_cap(data).to_request(default_expires_in=7200)
    assert (request.expires, request.expires_in) == (None, 7200)


def test_a_flood_of_schema_errors_is_reported_by_its_first_ones() -> None:
    data = cap_doc().replace(b"<scope>Public</scope>", b"<scope>Public</scope>" + b"<x/>" * 500)
    error = refusal(data)
    assert (error.element, error.line) == ("/alert/x", 8)
    assert len(error.details) == 20
    assert "the first 20 are listed" in error.message
