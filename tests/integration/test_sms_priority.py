"""Red warnings first: an actual red warning's texts overtake a drill's queued texts, the drill
still completes, and the gateway's rate holds in every window (issue 15). A real engine, Redis
and broker, and the HTTP gateway sandbox keeping the books."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import redis

from adapters.sms.gateway import split_out_id
from adapters.sms.settings import GatewaySettings
from adapters.sms.store import Lane
from dispatcher.store.keys import sms_job_key
from tests.helpers import TAIJIANG_VILLAGE, ZHONGSHAN, wait_for
from tests.integration.engine import PROVINCE, people, phone
from tests.integration.test_sms import engine_with, issue, register, until_sms
from tests.support.sms_sandbox import GenericGatewayServer

RATE = 100  # batches of 5, one every 51 ms
BATCH = 5
DRILL, RED = 400, 20


def jobs_in_order(gw: GenericGatewayServer) -> list[str]:
    """The job of every message the gateway took, in the order it took them."""
    return [split_out_id(str(a.key))[0] for a in sorted(gw.accepted, key=lambda a: a.at)]


async def test_a_red_warning_overtakes_a_drill_and_the_drill_still_completes(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    async with (
        GenericGatewayServer(rate_limit=RATE) as gw,
        engine_with(redis_url, mqtt_url, tmp_path, [gw], gw1={"rate": RATE}) as client,
    ):
        await register(client, people(DRILL, ZHONGSHAN))
        await register(client, people(RED, TAIJIANG_VILLAGE, start=10_000))
        drill = await issue(client, areas=[ZHONGSHAN], status="exercise", headline="台风红色预警")
        # The drill is well under way (and most of it still queued) before the red is issued.
        await wait_for(lambda: len(gw.accepted) >= 50, timeout=20, message="drill texts sent")
        red = await issue(client, areas=[TAIJIANG_VILLAGE])
        await until_sms(client, red, delivered=RED, timeout=20)
        drill_when_red_done = len(gw.accepted) - RED
        await until_sms(client, drill, delivered=DRILL, timeout=30)

    order = jobs_in_order(gw)
    reds = [i for i, job in enumerate(order) if job == red]
    assert len(reds) == RED
    # The red's texts went in one run: no drill batch between its first and its last, but
    # for at most one already through the gate when the red's chunk was read.
    drill_inside = sum(1 for job in order[reds[0] : reds[-1] + 1] if job == drill)
    assert drill_inside <= BATCH, order[reds[0] : reds[-1] + 1]
    # Overtaken: most of the drill was still queued when the red was done (FIFO would have
    # sent all 400 drill texts first).
    assert drill_when_red_done < DRILL - 100
    assert order.count(drill) == DRILL
    # Each person texted once per alert, and the contract's rate held in every window.
    assert gw.duplicates == 0
    assert all(gw.sent_count(phone(i), drill) == 1 for i in range(DRILL))
    assert all(gw.sent_count(phone(10_000 + i), red) == 1 for i in range(RED))
    assert gw.throttled == 0
    assert gw.peak_rate <= RATE


@pytest.mark.parametrize(
    ("fields", "lane"),
    [
        ({"severity": "red"}, Lane.URGENT),
        ({"severity": "orange"}, Lane.URGENT),
        ({"severity": "yellow"}, Lane.ROUTINE),
        ({"severity": "blue"}, Lane.ROUTINE),
        ({"severity": "red", "status": "exercise"}, Lane.ROUTINE),
        ({"severity": "red", "status": "test"}, Lane.ROUTINE),
    ],
)
async def test_only_actual_red_and_orange_warnings_are_urgent(
    redis_url: str,
    mqtt_url: str,
    rdb: redis.Redis,
    tmp_path: Path,
    fields: dict[str, str],
    lane: Lane,
) -> None:
    async with (
        GenericGatewayServer() as gw,
        engine_with(redis_url, mqtt_url, tmp_path, [gw]) as client,
    ):
        await register(client, people(3, ZHONGSHAN))
        alert_id = await issue(client, areas=[ZHONGSHAN], **fields)
        await until_sms(client, alert_id, delivered=3)
    assert rdb.hget(sms_job_key(alert_id), "lane") == str(int(lane))
    # Its chunk went through its lane's stream, and only that one.
    streams = {Lane.URGENT: "ebd:sms:outbox", Lane.ROUTINE: "ebd:sms:outbox:routine"}
    for other, stream in streams.items():
        entries: list[tuple[str, dict[str, str]]] = rdb.xrange(stream)  # type: ignore[assignment]
        assert (alert_id in [fields["job"] for _, fields in entries]) is (other is lane)


async def test_bad_input_is_still_refused(redis_url: str, mqtt_url: str, tmp_path: Path) -> None:
    # A contract of no messages per second, or batches of none, is no contract.
    for bad in ({"rate": 0}, {"batch_size": 0}, {"rate": -5}):
        fields = {"name": "gw", "protocol": "generic", "url": "http://127.0.0.1:9/"}
        with pytest.raises(pydantic.ValidationError):
            GatewaySettings.model_validate({**fields, "callback_secret": "0123456789abcdef", **bad})
    async with (
        GenericGatewayServer() as gw,
        engine_with(redis_url, mqtt_url, tmp_path, [gw]) as client,
    ):
        await register(client, people(3, ZHONGSHAN))
        for body in (
            {"severity": "crimson"},
            {"status": "drill"},
            {"channels": ["sms", "pager"]},
        ):
            response = await client.post(
                "/api/v1/alerts",
                headers=PROVINCE,
                json={
                    "event": "台风",
                    "event_code": "11B01",
                    "severity": "red",
                    "headline": "台风红色预警",
                    "text": "预计未来24小时将有12级以上大风。",
                    "areas": [ZHONGSHAN],
                    "expires_in": 3600,
                    "channels": ["sms"],
                    **body,
                },
            )
            assert response.status == 422, (body, await response.text())
        assert gw.requests == 0
