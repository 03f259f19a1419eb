"""CAP 1.2 out: what the engine renders is valid against the OASIS schema, escapes its texts,
and reads back (``cap_in``) to the request it was issued from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dispatcher.core.cap_in import parse_cap
from dispatcher.core.cap_out import cap_sender, cap_time, category, to_cap_xml
from dispatcher.core.cap_schema import CAP_NS, read_cap, read_valid_cap
from dispatcher.core.models import Alert, AlertRequest, Channel, MsgType, Status
from tests.helpers import alert_body, fujian

DOMAIN = "ebd.fj.gov.cn"
SENT = datetime(2026, 12, 6, 12, 30, 15, 123000, tzinfo=UTC)
N = f"{{{CAP_NS}}}"


def issue(sent: datetime | None = None, **fields: Any) -> Alert:
    body = {
        "headline": "福州市气象台发布台风红色预警信号",
        "text": "受台风“杜苏芮”影响，预计未来24小时内鼓楼区、台江区将出现12级以上大风。",
        "instruction": "请立即停止户外作业，转移至安全场所。",
        "areas": ["350102", "350103"],
        "expires_in": 6 * 3600,
    }
    request = AlertRequest.model_validate(alert_body(**(body | fields)))
    return Alert.issue(
        request,
        office_id="fz-city",
        office_name="福州市气象台",
        areas=request.areas,
        sent=sent or datetime.now(UTC),
    )


def names(alert: Alert) -> dict[str, str]:
    return {code: fujian().get(code).name for code in alert.areas}


def render(alert: Alert, referenced: dict[str, Alert] | None = None) -> bytes:
    return to_cap_xml(alert, sender_domain=DOMAIN, region_names=names(alert), referenced=referenced)


def test_a_rendered_alert_is_valid_cap_with_its_regions_by_code() -> None:
    alert = issue()
    data = render(alert)
    assert data.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n<alert xmlns=")
    root = read_valid_cap(data).root  # the OASIS schema, and the safe parser
    assert root.findtext(N + "identifier") == alert.id
    assert root.findtext(N + "sender") == "fz-city@ebd.fj.gov.cn"
    assert root.findtext(N + "scope") == "Public"
    info = root.find(N + "info")
    assert info is not None
    assert info.findtext(N + "language") == "zh-CN"
    assert info.findtext(N + "category") == "Met"  # 11B: meteorological
    assert info.findtext(N + "severity") == "Extreme"
    assert info.findtext(N + "eventCode/" + N + "value") == "11B01"
    areas = [
        (
            a.findtext(N + "areaDesc"),
            a.findtext(f"{N}geocode/{N}valueName"),
            a.findtext(f"{N}geocode/{N}value"),
        )
        for a in info.findall(N + "area")
    ]
    assert areas == [("鼓楼区", "GB/T 2260", "350102"), ("台江区", "GB/T 2260", "350103")]


def test_times_have_an_offset_and_no_fraction() -> None:
    assert cap_time(SENT) == "2026-12-06T20:30:15+08:00"
    root = read_cap(render(issue(sent=SENT))).root
    assert root.findtext(N + "sent") == "2026-12-06T20:30:15+08:00"


def test_texts_with_markup_characters_are_escaped_and_read_back() -> None:
    text = "预警 <b>加粗</b> & \"引号\" '单引号' ]]> 结束\n第二行"
    alert = issue(text=text, headline="台风 & 暴雨 <红色> 预警")
    data = render(alert)
    assert b"&amp; \xe6\x9a\xb4\xe9\x9b\xa8 &lt;" in data  # "& 暴雨 <"
    request = parse_cap(data).to_request()
    assert (request.text, request.headline) == (text, "台风 & 暴雨 <红色> 预警")


def test_the_round_trip_gives_the_same_request() -> None:
    alert = issue(status="exercise", channels=["loudspeaker"])
    request = parse_cap(render(alert)).to_request(known_region=fujian().__contains__)
    assert request.event == alert.event
    assert request.event_code == alert.event_code
    assert request.severity is alert.severity
    assert (request.headline, request.text, request.instruction) == (
        alert.headline,
        alert.text,
        alert.instruction,
    )
    assert request.areas == alert.areas
    assert (request.status, request.msg_type) == (Status.EXERCISE, MsgType.ALERT)
    assert request.expires == alert.expires.replace(microsecond=0)
    assert request.channels == [Channel.LOUDSPEAKER]


def test_an_update_references_the_alert_it_replaces_by_triple() -> None:
    first = issue(sent=datetime.now(UTC) - timedelta(minutes=30))
    update = issue(msg_type="update", references=[first.id], severity="orange")
    data = render(update, referenced={first.id: first})
    root = read_cap(data).root
    assert root.findtext(N + "references") == (
        f"fz-city@{DOMAIN},{first.id},{cap_time(first.sent)}"
    )
    back = parse_cap(data)
    assert back.references[0].identifier == first.id
    assert back.references[0].sent == first.sent.replace(microsecond=0)
    request = back.to_request()
    assert (request.msg_type, request.references) == (MsgType.UPDATE, [first.id])
    assert request.severity.cap == "Severe"


def test_a_cancel_round_trips() -> None:
    first = issue()
    cancel = issue(msg_type="cancel", references=[first.id])
    request = parse_cap(render(cancel, referenced={first.id: first})).to_request()
    assert (request.msg_type, request.references) == (MsgType.CANCEL, [first.id])


def test_a_reference_not_given_is_an_error_of_the_caller() -> None:
    update = issue(msg_type="update", references=["fz-city-20261206T120000Z-00000000"])
    with pytest.raises(ValueError, match="referenced alert fz-city-20261206T120000Z-00000000"):
        render(update)


@pytest.mark.parametrize("domain", ["ebd fj", "a,b", "x<y", "a&b"])
def test_a_sender_cap_refuses_is_refused(domain: str) -> None:
    with pytest.raises(ValueError, match="no spaces, commas"):
        cap_sender("fz-city", domain)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("11B01", "Met"),
        ("11C01", "Geo"),
        ("11G01", "Fire"),
        ("13A01", "Health"),
        (None, "Other"),
        ("99Z99", "Other"),
    ],
)
def test_the_category_follows_the_event_class(code: str | None, expected: str) -> None:
    assert category(code) == expected


def test_an_area_without_a_name_is_described_by_its_code() -> None:
    alert = issue()
    data = to_cap_xml(alert, sender_domain=DOMAIN, region_names={"350102": "鼓楼区"})
    descs = [a.desc for a in parse_cap(data).areas]
    assert descs == ["鼓楼区", "350103"]
