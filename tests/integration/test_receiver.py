"""The field-receiver agent against a real mosquitto: dedup, acks, expiry, resend, cancel,
the Last Will and the persistent session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispatcher.embedded.processes import MosquittoServer
from receiver.agent import PlayerError, ReceiverAgent, run_agent
from receiver.brain import Play
from tests.helpers import (
    COUNTY_TOPIC,
    PROVINCE_TOPIC,
    VILLAGE_TOPIC,
    ZHONGSHAN,
    unique,
    wait_for,
)
from tests.support.broker import TEST_KEYRING, Watch, agent_access, alert_body

ACK_KEYS = {"v", "alert_id", "state", "at", "detail"}


class RecordingPlayer:
    """Plays instantly (or for ``play_time`` seconds) and remembers what it played."""

    def __init__(self, play_time: float = 0.0) -> None:
        self.play_time = play_time
        self.played: list[Play] = []
        self.started = asyncio.Event()

    async def play(self, item: Play) -> None:
        self.played.append(item)
        self.started.set()
        await asyncio.sleep(self.play_time)


@contextlib.asynccontextmanager
async def running(agent: ReceiverAgent) -> AsyncIterator[asyncio.Event]:
    """Run the agent until the block ends, then stop it the graceful way."""
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop), name=f"test-agent-{agent.terminal_id}")
    try:
        await wait_for(agent.connected.is_set, message="agent subscribed")
        yield stop
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


_PASSWORDS: dict[tuple[str, str], tuple[str, str]] = {}


async def agent_for(mqtt_url: str, terminal_id: str, **options: Any) -> ReceiverAgent:
    """The reference agent in Zhongshan village as a deployed one is: its own broker account
    (granted once per terminal), TLS against the broker's CA, the tests' keyring."""
    key = (mqtt_url, terminal_id)
    if key not in _PASSWORDS:
        _PASSWORDS[key] = await agent_access(mqtt_url, terminal_id)
    url, ca_pem = _PASSWORDS[key]
    return ReceiverAgent(
        terminal_id, ZHONGSHAN, url, keyring=TEST_KEYRING, ca_pem=ca_pem, **options
    )


@contextlib.asynccontextmanager
async def listening(mqtt_url: str, player: Any) -> AsyncIterator[str]:
    """A receiver in Zhongshan village with ``player``, running until the block ends; the
    block gets its terminal id."""
    terminal_id = unique("rx")
    async with running(await agent_for(mqtt_url, terminal_id, player=player)):
        yield terminal_id


def states_of(acks: list[dict[str, Any]]) -> list[str]:
    return [a["state"] for a in acks]


async def test_an_alert_on_two_topics_twice_plays_once_and_acks_received_then_played(
    mqtt_url: str, watch: Watch
) -> None:
    alert_id, player = unique("al"), RecordingPlayer()
    async with listening(mqtt_url, player) as terminal_id:
        body = alert_body(alert_id)
        await watch.publish(COUNTY_TOPIC, body)
        await watch.publish(COUNTY_TOPIC, body)
        await watch.publish(PROVINCE_TOPIC, body)
        await wait_for(lambda: "played" in states_of(watch.acks(terminal_id, alert_id)))
        # The two re-deliveries are answered too (by repeating the latest ack).
        await wait_for(lambda: len(watch.acks(terminal_id, alert_id)) >= 5)
    acks = watch.acks(terminal_id, alert_id)
    assert [p.alert_id for p in player.played] == [alert_id]
    # A repeated ack is the very same payload, ``at`` included.
    distinct = [json.loads(p) for p in dict.fromkeys(json.dumps(a) for a in acks)]
    assert states_of(distinct) == ["received", "playing", "played"]
    for ack in acks:
        assert set(ack) <= ACK_KEYS, "the terminal id is the topic's, never the payload's"
        assert ack["v"] == 1
        assert datetime.fromisoformat(ack["at"]).utcoffset() is not None


async def test_an_expired_alert_is_not_played_and_acked_failed_expired(
    mqtt_url: str, watch: Watch
) -> None:
    alert_id, player = unique("al"), RecordingPlayer()
    async with listening(mqtt_url, player) as terminal_id:
        sent = datetime.now(UTC) - timedelta(hours=2)
        await watch.publish(VILLAGE_TOPIC, alert_body(alert_id, sent=sent))
        await wait_for(lambda: watch.acks(terminal_id, alert_id))
    ((ack),) = watch.acks(terminal_id, alert_id)
    assert (ack["state"], ack["detail"]) == ("failed", "expired")
    assert player.played == []


async def test_a_resend_on_cmd_repeats_the_latest_ack_without_playing_again(
    mqtt_url: str, watch: Watch
) -> None:
    alert_id, player = unique("al"), RecordingPlayer()
    body = alert_body(alert_id)
    async with listening(mqtt_url, player) as terminal_id:
        await watch.publish(COUNTY_TOPIC, body)
        await wait_for(lambda: "played" in states_of(watch.acks(terminal_id, alert_id)))
        first_played = watch.acks(terminal_id, alert_id)[-1]
        await watch.publish(f"eb/v1/term/{terminal_id}/cmd", body)
        await wait_for(lambda: states_of(watch.acks(terminal_id, alert_id)).count("played") == 2)
    assert watch.acks(terminal_id, alert_id)[-1] == first_played
    assert len(player.played) == 1


async def test_a_cancel_cuts_the_drill_being_played_and_is_announced(
    mqtt_url: str, watch: Watch
) -> None:
    terminal_id, drill_id, cancel_id = unique("rx"), unique("drill"), unique("cancel")
    player = RecordingPlayer(play_time=60)
    agent = await agent_for(mqtt_url, terminal_id, player=player)
    async with running(agent):
        await watch.publish(COUNTY_TOPIC, alert_body(drill_id, status="exercise"))
        await wait_for(player.started.is_set)
        player.play_time = 0.0  # the cancel's own announcement is short
        cancel = alert_body(cancel_id, msg_type="cancel", references=[drill_id], status="exercise")
        await watch.publish(COUNTY_TOPIC, cancel)
        await wait_for(lambda: "played" in states_of(watch.acks(terminal_id, cancel_id)))
        await wait_for(lambda: "failed" in states_of(watch.acks(terminal_id, drill_id)))
    assert player.played[0].text.startswith("演练")
    assert states_of(watch.acks(terminal_id, drill_id)) == ["received", "playing", "failed"]
    assert watch.acks(terminal_id, drill_id)[-1]["detail"] == "cancelled"
    assert states_of(watch.acks(terminal_id, cancel_id)) == ["received", "playing", "played"]
    assert [p.alert_id for p in player.played] == [drill_id, cancel_id]
    assert player.played[1].text.startswith("演练：【解除】")
    assert player.played[1].text.endswith("现已解除。")


async def test_the_session_keeps_what_was_published_while_the_terminal_was_away(
    mqtt_url: str, watch: Watch
) -> None:
    terminal_id, alert_id = unique("rx"), unique("al")
    first = await agent_for(mqtt_url, terminal_id, player=RecordingPlayer())
    async with running(first):
        assert first.session_present is False
    await wait_for(lambda: watch.states(terminal_id)[-1:] == ["offline"])
    await watch.publish(VILLAGE_TOPIC, alert_body(alert_id))  # nobody is connected now
    player = RecordingPlayer()
    second = await agent_for(mqtt_url, terminal_id, player=player)
    async with running(second):
        assert second.session_present is True
        await wait_for(lambda: "played" in states_of(watch.acks(terminal_id, alert_id)))
    assert [p.alert_id for p in player.played] == [alert_id]
    assert watch.states(terminal_id) == ["online", "offline", "online", "offline"]


async def test_a_reconnect_after_a_broker_restart_finds_its_session(
    fresh_mosquitto: MosquittoServer,
) -> None:
    terminal_id, alert_id = unique("rx"), unique("al")
    player = RecordingPlayer()
    agent = await agent_for(fresh_mosquitto.url, terminal_id, player=player)
    async with running(agent):
        assert agent.connects == 1
        await asyncio.to_thread(fresh_mosquitto.restart)
        await wait_for(lambda: agent.connects == 2 and agent.connected.is_set(), timeout=20)
        assert agent.session_present is True
        watch = Watch()
        await watch.open(fresh_mosquitto.url, [f"eb/v1/term/{terminal_id}/ack"])
        try:
            await watch.publish(COUNTY_TOPIC, alert_body(alert_id))
            await wait_for(lambda: "played" in states_of(watch.acks(terminal_id, alert_id)))
        finally:
            await watch.close()


@pytest.fixture
async def killable_agent(mqtt_url: str, tmp_path: Path) -> tuple[str, list[str]]:
    """The agent in a process of its own, so it can die the way a power cut kills it."""
    terminal_id = unique("rx")
    url, ca_pem = await agent_access(mqtt_url, terminal_id)
    (tmp_path / "ca.pem").write_text(ca_pem, encoding="ascii")
    TEST_KEYRING.save(tmp_path / "keyring.json")
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from dispatcher.core.signing import Keyring\n"
        "from receiver.agent import run_agent\n"
        "asyncio.run(run_agent(sys.argv[1], sys.argv[2], sys.argv[3],"
        " keyring=Keyring.load(Path(sys.argv[4])), ca_pem=Path(sys.argv[5]).read_text()))\n"
    )
    # The terminal's URL (its password in it) goes to the child through its environment in a
    # deployment; here, argv of a test process, on a test broker.
    argv = [sys.executable, "-c", code, terminal_id, ZHONGSHAN, url]
    return terminal_id, [*argv, str(tmp_path / "keyring.json"), str(tmp_path / "ca.pem")]


async def test_the_last_will_says_offline_when_the_terminal_dies(
    killable_agent: tuple[str, list[str]], watch: Watch
) -> None:
    terminal_id, argv = killable_agent
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await wait_for(lambda: watch.states(terminal_id) == ["online"], timeout=20)
    finally:
        process.kill()
        await process.wait()
    await wait_for(lambda: watch.states(terminal_id) == ["online", "offline"])
    (offline,) = [s for s in watch.on(f"eb/v1/term/{terminal_id}/state") if s["state"] != "online"]
    assert offline["region"] == ZHONGSHAN


async def test_run_agent_stops_when_told(mqtt_url: str, watch: Watch) -> None:
    terminal_id = unique("rx")
    stop = asyncio.Event()
    url, ca_pem = await agent_access(mqtt_url, terminal_id)
    task = asyncio.create_task(
        run_agent(terminal_id, ZHONGSHAN, url, stop=stop, keyring=TEST_KEYRING, ca_pem=ca_pem)
    )
    await wait_for(lambda: watch.states(terminal_id) == ["online"])
    stop.set()
    async with asyncio.timeout(10):
        await task
    await wait_for(lambda: watch.states(terminal_id) == ["online", "offline"])


class BrokenPlayer:
    async def play(self, item: Play) -> None:
        raise PlayerError("amplifier fault")


async def test_a_player_failure_is_acked_failed_with_its_message(
    mqtt_url: str, watch: Watch
) -> None:
    alert_id = unique("al")
    async with listening(mqtt_url, BrokenPlayer()) as terminal_id:
        await watch.publish(COUNTY_TOPIC, alert_body(alert_id))
        await wait_for(lambda: "failed" in states_of(watch.acks(terminal_id, alert_id)))
    assert watch.acks(terminal_id, alert_id)[-1]["detail"] == "amplifier fault"


async def test_a_restarted_agent_answers_a_resend_from_its_state_file_without_playing(
    mqtt_url: str, watch: Watch, tmp_path: Path
) -> None:
    """The terminal played, then rebooted before the engine heard its ack: the resend gets
    the saved ack, and the warning is not sounded twice."""
    terminal_id, alert_id = unique("rx"), unique("al")
    state_file = tmp_path / "receiver.json"
    body = alert_body(alert_id)
    first = RecordingPlayer()
    async with running(await agent_for(mqtt_url, terminal_id, player=first, state_file=state_file)):
        await watch.publish(COUNTY_TOPIC, body)
        await wait_for(lambda: "played" in states_of(watch.acks(terminal_id, alert_id)))
    saved = json.loads(state_file.read_text(encoding="utf-8"))
    assert saved[alert_id]["ack"]["state"] == "played"
    again = RecordingPlayer()
    async with running(await agent_for(mqtt_url, terminal_id, player=again, state_file=state_file)):
        await watch.publish(f"eb/v1/term/{terminal_id}/cmd", body)
        await wait_for(lambda: states_of(watch.acks(terminal_id, alert_id)).count("played") == 2)
    assert (len(first.played), len(again.played)) == (1, 0)
    # A damaged state file is no reason not to start: it is read as empty.
    state_file.write_text("{not json", encoding="utf-8")
    assert (await agent_for(mqtt_url, terminal_id, state_file=state_file)).brain.handled() == []
