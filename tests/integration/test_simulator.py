"""Many virtual terminals in one process against a real mosquitto: routing by topic, acks,
silent and failing terminals, the Last Will and persistent sessions across a dropped link."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from pathlib import Path

import pytest

from dispatcher.core.regions import Level, RegionTree, alert_topic
from receiver.simulator import (
    Behaviour,
    SimTerminal,
    Simulator,
    SimulatorError,
    run_simulator_cli,
    village_terminals,
)
from tests.helpers import fujian, unique, wait_for
from tests.support.broker import TEST_KEYRING, Watch, alert_body, simulator_on

COUNTY_A = "350181"  # 福清市, 522 villages
COUNTY_B = "350582"  # 晋江市, 405 villages


def terminals(tree: RegionTree, county: str, n: int, prefix: str) -> list[SimTerminal]:
    """``n`` village terminals of ``county``, with ids of this test's own (the session broker
    keeps every persistent session it has seen)."""
    villages = tree.descendants(county, level=Level.VILLAGE)[:n]
    return [SimTerminal(f"{prefix}-{village.code}", village.code) for village in villages]


def acks_by_terminal(watch: Watch, prefix: str, alert_id: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for message in watch.messages:
        parts = message.topic.split("/")
        if parts[-1] == "ack" and parts[3].startswith(prefix):
            ack = json.loads(message.payload)
            if ack["alert_id"] == alert_id:
                found.setdefault(parts[3], []).append(ack["state"])
    return found


def test_village_terminals_cover_every_village_below_a_region(tree: RegionTree) -> None:
    province = village_terminals(tree.villages("35"))
    assert len(province) == 17_498
    assert (province[0].id, province[0].region) == ("sim-350102001001-1", "350102001001")
    two = village_terminals(tree.villages("350102001"), per_village=2)
    assert [t.id for t in two[:2]] == ["sim-350102001001-1", "sim-350102001001-2"]
    assert len(two) == 2 * len(tree.descendants("350102001", level=Level.VILLAGE))
    village = village_terminals(tree.villages("350102001001"))
    assert [(t.id, t.region) for t in village] == [("sim-350102001001-1", "350102001001")]


async def test_a_county_alert_reaches_exactly_that_countys_terminals_once_each(
    tree: RegionTree, mqtt_url: str, watch: Watch
) -> None:
    prefix, alert_id = unique("sim"), unique("al")
    county_a = terminals(tree, COUNTY_A, 150, prefix)
    county_b = terminals(tree, COUNTY_B, 150, prefix)
    async with await simulator_on(mqtt_url, county_a + county_b) as sim:
        assert sim.connected == 300
        await watch.publish(alert_topic(COUNTY_A), alert_body(alert_id, areas=[COUNTY_A]))
        await sim.wait_played(alert_id, 150, timeout=20)
        await wait_for(lambda: len(acks_by_terminal(watch, prefix, alert_id)) >= 150)
        assert sim.received(alert_id) == 150
        assert sim.played(alert_id) == 150
        assert sim.duplicates == 0
        acks = acks_by_terminal(watch, prefix, alert_id)
        assert set(acks) == {t.id for t in county_a}
        assert all(states == ["received", "played"] for states in acks.values())
        assert all(sim.plays_of(t.id) == {alert_id: 1} for t in county_a)
        assert all(sim.plays_of(t.id) == {} for t in county_b)


async def test_silent_terminals_play_but_never_ack_and_failing_ones_ack_failed(
    tree: RegionTree, mqtt_url: str, watch: Watch
) -> None:
    prefix, alert_id = unique("sim"), unique("al")
    fleet = terminals(tree, COUNTY_A, 60, prefix)
    silent = frozenset(t.id for t in fleet[:10])
    failing = frozenset(t.id for t in fleet[10:15])
    behaviour = Behaviour(silent=silent, fail=failing, play_time=0.05, send_playing=True)
    async with await simulator_on(mqtt_url, fleet, behaviour=behaviour) as sim:
        await watch.publish(alert_topic(COUNTY_A), alert_body(alert_id, areas=[COUNTY_A]))
        await sim.wait_played(alert_id, 45, timeout=20)
        await wait_for(lambda: sim.counts.failed(alert_id) == 5)
        expected = {t.id for t in fleet} - silent
        await wait_for(lambda: acks_by_terminal(watch, prefix, alert_id).keys() == expected)
        await wait_for(
            lambda: all(len(s) == 3 for s in acks_by_terminal(watch, prefix, alert_id).values())
        )
    acks = acks_by_terminal(watch, prefix, alert_id)
    assert Counter(tuple(states) for states in acks.values()) == {
        ("received", "playing", "played"): 45,
        ("received", "playing", "failed"): 5,
    }
    assert sim.received(alert_id) == 60  # silent ones received it too; they just never said so


async def test_a_cancel_during_play_time_stops_the_virtual_playback(
    tree: RegionTree, mqtt_url: str, watch: Watch
) -> None:
    prefix, alert_id, cancel_id = unique("sim"), unique("al"), unique("cancel")
    fleet = terminals(tree, COUNTY_B, 20, prefix)
    async with await simulator_on(mqtt_url, fleet, behaviour=Behaviour(play_time=60)) as sim:
        await watch.publish(alert_topic(COUNTY_B), alert_body(alert_id, areas=[COUNTY_B]))
        await sim.wait_received(alert_id, 20, timeout=20)
        cancel = alert_body(cancel_id, msg_type="cancel", references=[alert_id], areas=[COUNTY_B])
        await watch.publish(alert_topic("35"), cancel)
        await sim.wait_played(cancel_id, 20, timeout=20)
        await wait_for(lambda: sim.counts.failed(alert_id) == 20)
    assert sim.played(alert_id) == 0


async def test_a_dropped_terminal_leaves_its_will_and_gets_what_it_missed_on_return(
    tree: RegionTree, mqtt_url: str, watch: Watch
) -> None:
    prefix, alert_id = unique("sim"), unique("al")
    fleet = terminals(tree, COUNTY_A, 30, prefix)
    dropped = [t.id for t in fleet[:5]]
    async with await simulator_on(mqtt_url, fleet) as sim:
        await wait_for(lambda: all(watch.states(t.id) == ["online"] for t in fleet))
        await sim.drop(dropped)
        await wait_for(lambda: all(watch.states(i) == ["online", "offline"] for i in dropped))
        await watch.publish(alert_topic(COUNTY_A), alert_body(alert_id, areas=[COUNTY_A]))
        await sim.wait_played(alert_id, 25, timeout=20)
        assert all(sim.plays_of(i) == {} for i in dropped)
        await sim.reconnect(dropped)
        assert all(t.session_present for t in fleet[:5])
        await sim.wait_played(alert_id, 30, timeout=20)
        await wait_for(lambda: len(acks_by_terminal(watch, prefix, alert_id)) == 30)
        # An engine resend on the cmd topic: the ack again, no second playback.
        await watch.publish(f"eb/v1/term/{dropped[0]}/cmd", alert_body(alert_id, areas=[COUNTY_A]))
        await wait_for(lambda: sim.duplicates == 1)
        await wait_for(
            lambda: acks_by_terminal(watch, prefix, alert_id)[dropped[0]][-1:] == ["played"]
        )
        assert sim.plays_of(dropped[0]) == {alert_id: 1}
    await wait_for(lambda: all(watch.states(t.id)[-1] == "offline" for t in fleet))


async def test_start_gives_up_saying_how_many_connected() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: every connect is refused
        fleet = [SimTerminal(unique("sim"), "350102001001") for _ in range(3)]
        sim = Simulator(fleet, f"mqtt://127.0.0.1:{port}", keyring=TEST_KEYRING)
        with pytest.raises(SimulatorError, match="only 0 of 3 terminals") as failed:
            await sim.start(timeout=1.0)
    assert (failed.value.connected, failed.value.total) == (0, 3)
    await sim.stop()


async def test_ack_delay_holds_acks_back_in_order(
    tree: RegionTree, mqtt_url: str, watch: Watch
) -> None:
    prefix, alert_id = unique("sim"), unique("al")
    fleet = terminals(tree, COUNTY_B, 5, prefix)
    loop = asyncio.get_running_loop()
    async with await simulator_on(mqtt_url, fleet, behaviour=Behaviour(ack_delay=0.3)) as sim:
        published = loop.time()
        await watch.publish(alert_topic(COUNTY_B), alert_body(alert_id, areas=[COUNTY_B]))
        await sim.wait_played(alert_id, 5, timeout=20)
        await wait_for(lambda: len(acks_by_terminal(watch, prefix, alert_id)) == 5)
        assert loop.time() - published >= 0.3
    assert all(
        s == ["received", "played"] for s in acks_by_terminal(watch, prefix, alert_id).values()
    )


async def test_ebd_sim_reports_ready_and_stops_cleanly(
    mqtt_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ready = tmp_path / "ready"
    sim = await simulator_on(mqtt_url, village_terminals(fujian().villages("350102001")))
    task = asyncio.create_task(
        run_simulator_cli(
            sim.terminals,
            "鼓东街道",
            sim.mqtt_url,
            ready_file=ready,
            interval=0.05,
            keyring=TEST_KEYRING,
            ca_pem=sim.ca_pem,
        )
    )
    await wait_for(ready.exists)
    await wait_for(lambda: "connected 5/5" in capsys.readouterr().out)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ready.read_text(encoding="utf-8") == "5 terminals connected\n"
