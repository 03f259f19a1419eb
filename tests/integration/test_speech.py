"""The receiver's voice: espeak-ng really speaks an alert that came over the broker (written
to a WAV file, as there is no sound card here), the player ``ebd receiver`` chooses, and what
happens without espeak-ng or without a sound device."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from receiver.agent import EspeakPlayer, LogPlayer, PlayerError, choose_player
from receiver.brain import Play, parse_alert
from tests.helpers import COUNTY_TOPIC, unique, wait_for
from tests.integration.test_receiver import agent_for, running, states_of
from tests.support.broker import Watch, alert_body

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (`sudo apt-get install espeak-ng`; `make deps` tries)",
)


def riff(path: Path) -> bytes:
    """The WAV's bytes after checking it is a non-empty RIFF/WAVE with audio in it."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WAVE"
    # A header alone is 44 bytes; a spoken sentence at 22 kHz is tens of kilobytes.
    assert len(data) > 10_000
    return data


@needs_espeak
async def test_an_alert_from_the_broker_is_spoken_by_espeak(
    mqtt_url: str, watch: Watch, tmp_path: Path
) -> None:
    terminal_id, alert_id = unique("rx"), unique("al")
    wav = tmp_path / "spoken.wav"
    agent = await agent_for(mqtt_url, terminal_id, player=EspeakPlayer(wav_file=wav))
    async with running(agent):
        await watch.publish(COUNTY_TOPIC, alert_body(alert_id))
        await wait_for(lambda: "played" in states_of(watch.acks(terminal_id, alert_id)))
    assert states_of(watch.acks(terminal_id, alert_id)) == ["received", "playing", "played"]
    riff(wav)


@needs_espeak
async def test_a_longer_text_makes_longer_speech_and_english_has_its_voice(
    tmp_path: Path,
) -> None:
    short, long_, english = tmp_path / "short.wav", tmp_path / "long.wav", tmp_path / "en.wav"
    body = alert_body("a1") | {"repeat": 1}
    await EspeakPlayer(wav_file=short).play(Play(parse_alert(_json(body | {"text": "雨。"}))))
    await EspeakPlayer(wav_file=long_).play(Play(parse_alert(_json(body))))
    in_english = body | {"headline": "Rainstorm warning", "text": "Heavy rain.", "instruction": ""}
    await EspeakPlayer(wav_file=english).play(Play(parse_alert(_json(in_english))))
    assert len(riff(long_)) > len(riff(short))
    riff(english)


@needs_espeak
@pytest.mark.skipif(Path("/dev/snd").exists(), reason="this machine has a sound device")
async def test_espeak_without_a_sound_device_fails_the_playback_instead_of_acking_played() -> None:
    play = Play(parse_alert(_json(alert_body("a1") | {"repeat": 1})))
    with pytest.raises(PlayerError, match="no sound device"):
        await EspeakPlayer().play(play)


async def test_a_missing_espeak_binary_fails_the_playback_with_its_name() -> None:
    play = Play(parse_alert(_json(alert_body("a1") | {"repeat": 1})))
    with pytest.raises(PlayerError, match="cannot run no-such-espeak"):
        await EspeakPlayer("no-such-espeak").play(play)


@needs_espeak
def test_the_receiver_chooses_espeak_when_it_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EBD_RECEIVER_PLAYER", raising=False)
    monkeypatch.setenv("EBD_ESPEAK_VOICE", "zh")
    player = choose_player()
    assert isinstance(player, EspeakPlayer)
    assert player.voice == "zh"
    assert isinstance(choose_player("espeak", voice="cmn"), EspeakPlayer)


def test_without_espeak_the_receiver_warns_and_only_logs() -> None:
    with capture_logs() as logs:
        player = choose_player("auto", binary="no-such-espeak")
    assert isinstance(player, LogPlayer)
    warnings = [entry for entry in logs if entry["event"] == "receiver.no_speech"]
    assert len(warnings) == 1
    assert "apt-get install espeak-ng" in warnings[0]["message"]


def test_asking_for_espeak_without_it_is_an_error_saying_how_to_install_it() -> None:
    with pytest.raises(PlayerError, match="apt-get install espeak-ng"):
        choose_player("espeak", binary="no-such-espeak")
    with pytest.raises(PlayerError, match="choose one of auto, espeak, log, none"):
        choose_player("loud")


def test_the_environment_picks_the_log_or_no_player(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EBD_RECEIVER_PLAYER", "none")
    silent = choose_player()
    assert isinstance(silent, LogPlayer)
    assert silent.play_time == 0.0
    monkeypatch.setenv("EBD_RECEIVER_PLAYER", "log")
    logged = choose_player()
    assert isinstance(logged, LogPlayer)
    assert logged.play_time is None


def _json(body: dict[str, object]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()
