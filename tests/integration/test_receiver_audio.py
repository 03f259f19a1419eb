"""The terminal's side of the audio: the reference agent downloads the announcement a signed
payload names, checks its SHA-256 and plays it; a file changed on the server, a server that
does not answer, or a file too large, and it speaks the text instead."""

from __future__ import annotations

import hashlib
import json
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from dispatcher.embedded.processes import free_port
from receiver.agent import ReceiverAgent
from receiver.audio import AudioPlayer, AudioUnavailable, fetch
from receiver.simulator import SimTerminal
from tests.helpers import COUNTY_TOPIC, ZHONGSHAN, unique, wait_for
from tests.integration.engine import PROVINCE, Client, alert_body, register
from tests.integration.test_audio import audio_engine, needs_espeak, recording, upload
from tests.integration.test_receiver import RecordingPlayer, agent_for, running, states_of
from tests.support.broker import TEST_KEYRING, Watch
from tests.support.broker import alert_body as payload_body


async def engine_terminal(api: Client, player: AudioPlayer) -> ReceiverAgent:
    """A reference agent in Zhongshan village registered with the engine behind ``api`` (its
    broker account and keyring as the engine handed them out)."""
    terminal = SimTerminal(unique("rx"), ZHONGSHAN)
    given = await register(api, [terminal])
    url = given.url.replace("mqtts://", f"mqtts://{terminal.id}:{terminal.password}@")
    return ReceiverAgent(
        terminal.id, ZHONGSHAN, url, keyring=given.keyring, ca_pem=given.ca_pem, player=player
    )


def fallback_reasons(logs: list[MutableMapping[str, Any]]) -> list[str]:
    return [str(e["reason"]) for e in logs if e["event"] == "receiver.audio_fallback"]


@needs_espeak
async def test_the_receiver_plays_the_previewed_announcement_it_verified(
    redis_url: str, mqtt_url: str, watch: Watch, tmp_path: Path
) -> None:
    speech, out = RecordingPlayer(), tmp_path / "played.wav"
    async with audio_engine(redis_url, mqtt_url, tmp_path / "state") as api:
        player = AudioPlayer(speech, out_file=out)
        agent = await engine_terminal(api, player)
        async with running(agent):
            preview = await api.post(
                "/api/v1/alerts?dry_run=1", headers=PROVINCE, json=alert_body()
            )
            audio = (await preview.json())["audio"]
            issued = await api.post("/api/v1/alerts", headers=PROVINCE, json=alert_body())
            alert_id = (await issued.json())["id"]
            await wait_for(lambda: "played" in states_of(watch.acks(agent.terminal_id, alert_id)))
    assert hashlib.sha256(out.read_bytes()).hexdigest() == audio["sha256"]
    assert player.played_audio == [audio["sha256"]]
    assert speech.played == []
    # What reached the terminal: the engine's signed payload, naming that very file.
    signed = agent._payloads[alert_id]
    payload = json.loads(TEST_KEYRING.verify(signed, datetime.now(UTC)))
    assert payload["audio"] == audio


async def test_a_file_changed_on_the_server_is_discarded_and_the_text_spoken(
    redis_url: str, mqtt_url: str, watch: Watch, tmp_path: Path
) -> None:
    speech, out = RecordingPlayer(), tmp_path / "played.wav"
    state = tmp_path / "state"
    async with audio_engine(redis_url, mqtt_url, state) as api:
        agent = await engine_terminal(api, AudioPlayer(speech, out_file=out))
        stored = await (await upload(api, recording(1.0))).json()
        body = alert_body(recording=stored["sha256"], repeat=1)
        preview = await api.post("/api/v1/alerts?dry_run=1", headers=PROVINCE, json=body)
        audio = (await preview.json())["audio"]
        # Someone with the disk changes the file after it was hashed and named.
        path = state / "audio" / f"{audio['sha256']}.wav"
        data = bytearray(path.read_bytes())
        data[-100:] = b"\x7f" * 100  # the pause at the end, made a loud buzz
        path.write_bytes(bytes(data))
        async with running(agent):
            with capture_logs() as logs:
                issued = await api.post("/api/v1/alerts", headers=PROVINCE, json=body)
                alert_id = (await issued.json())["id"]
                await wait_for(
                    lambda: "played" in states_of(watch.acks(agent.terminal_id, alert_id))
                )
    assert [p.alert_id for p in speech.played] == [alert_id]
    assert not out.exists()
    [reason] = fallback_reasons(logs)
    assert f"not the signed {audio['sha256']}; discarded" in reason


async def test_an_unreachable_audio_server_means_the_text_is_spoken(
    mqtt_url: str, watch: Watch
) -> None:
    speech = RecordingPlayer()
    terminal_id, alert_id = unique("rx"), unique("al")
    nowhere = f"http://127.0.0.1:{free_port()}/audio/{'ab' * 32}.wav"
    agent = await agent_for(mqtt_url, terminal_id, player=AudioPlayer(speech, timeout=5))
    with capture_logs() as logs:
        async with running(agent):
            body = payload_body(alert_id) | {"audio": {"url": nowhere, "sha256": "ab" * 32}}
            await watch.publish(COUNTY_TOPIC, body)
            await wait_for(lambda: "played" in states_of(watch.acks(terminal_id, alert_id)))
    assert [p.alert_id for p in speech.played] == [alert_id]
    [reason] = fallback_reasons(logs)
    assert f"cannot fetch {nowhere}" in reason


async def test_the_download_is_bounded_and_only_http(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    async with audio_engine(redis_url, mqtt_url, tmp_path / "state") as api:
        stored = await (await upload(api, recording(1.0))).json()
        url, sha = stored["url"], stored["sha256"]
        assert hashlib.sha256(await fetch(url, sha, 5, 1_000_000)).hexdigest() == sha
        with pytest.raises(AudioUnavailable, match="is over 1000 bytes"):
            await fetch(url, sha, 5, 1000)
        with pytest.raises(AudioUnavailable, match="answered 404"):
            await fetch(url.replace(sha, "0" * 64), "0" * 64, 5, 1_000_000)
    with pytest.raises(AudioUnavailable, match="is not http"):
        await fetch("file:///etc/passwd", sha, 5, 1000)
