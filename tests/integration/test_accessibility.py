"""Accessibility (issue 16, item 4): regions with slower speech, extra repeats or another
voice hear their own variant of the announcement, rendered at preview and carried, signed, in
``audio_regions``; a terminal plays the variant of its region (the longest matching code) and
one elsewhere the default; ``speech_text`` is what the loudspeakers say, the SMS keeps its
text; a wrong ``[[audio.regions]]`` stops the engine at start, naming the key."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.loudspeaker.announcement import Announcer, AudioSettings
from adapters.sms.preview import SmsTextPreview
from adapters.sms.settings import SmsSettings
from dispatcher.app import ANNOUNCER, create_app
from dispatcher.core.errors import ConfigError
from dispatcher.core.models import AlertRequest
from receiver.agent import ReceiverAgent
from receiver.audio import AudioPlayer, SpokenPlay
from receiver.simulator import SimTerminal
from tests.helpers import TAIJIANG_VILLAGE, ZHONGSHAN, fujian, unique, wait_for
from tests.integration.engine import PROVINCE, Client, alert_body, engine_settings, register
from tests.integration.test_audio import audio_engine, needs_espeak, request, wav_info
from tests.integration.test_receiver import RecordingPlayer, running, states_of
from tests.support.broker import TEST_KEYRING, Watch

# Gulou county (Zhongshan village's) speaks slowly and says it once more; Taijiang does not.
SLOW_GULOU = {"code": "350102", "speed": 100, "extra_repeats": 1}
BOTH_COUNTIES = ["350102", "350103"]


async def terminal_in(api: Client, region: str, player: AudioPlayer) -> ReceiverAgent:
    """A reference agent in ``region`` registered with the engine behind ``api``."""
    terminal = SimTerminal(unique("acc"), region)
    given = await register(api, [terminal])
    url = given.url.replace("mqtts://", f"mqtts://{terminal.id}:{terminal.password}@")
    return ReceiverAgent(
        terminal.id, region, url, keyring=given.keyring, ca_pem=given.ca_pem, player=player
    )


def played(watch: Watch, alert_id: str, *agents: ReceiverAgent) -> bool:
    return all("played" in states_of(watch.acks(a.terminal_id, alert_id)) for a in agents)


def signed_payload(agent: ReceiverAgent, alert_id: str) -> dict[str, Any]:
    """What reached the terminal, its signature verified."""
    return dict(json.loads(TEST_KEYRING.verify(agent._payloads[alert_id], datetime.now(UTC))))


def speech_seconds(described: dict[str, Any], passes: int) -> float:
    """The words' share of one pass: a pass is the 3 s chime, the words, a 1.5 s pause."""
    return float(described["duration"]) / passes - 4.5


# -- rendering ---------------------------------------------------------------------------


@needs_espeak
async def test_a_preview_renders_slower_and_longer_variants(tmp_path: Path) -> None:
    settings = AudioSettings.model_validate(
        {"regions": [{"code": "350102", "speed": 80}, {"code": "350103", "extra_repeats": 2}]}
    )
    announcer = Announcer(settings, tmp_path / "audio", "http://engine.test", tree=fujian())
    shown = await announcer.preview(request(repeat=1, areas=BOTH_COUNTIES))
    assert shown is not None
    regions = {entry["code"]: entry for entry in shown.pop("regions")}
    slow, more = regions["350102"], regions["350103"]
    assert (slow["speed"], slow["repeat"]) == (80, 1)
    assert (more["speed"], more["repeat"]) == (150, 3)
    for described in (shown, slow, more):
        data = (tmp_path / "audio" / f"{described['sha256']}.wav").read_bytes()
        assert hashlib.sha256(data).hexdigest() == described["sha256"]
        assert wav_info(data)[1] == pytest.approx(described["duration"], abs=0.01)
    # 80 words a minute instead of 150: the words take most of twice as long.
    assert speech_seconds(slow, 1) > 1.5 * speech_seconds(shown, 1)
    # Two extra passes of the same sound: three times the one-pass file.
    assert more["duration"] == pytest.approx(3 * shown["duration"], rel=0.01)
    assert len({shown["sha256"], slow["sha256"], more["sha256"]}) == 3
    # Rendered once: the variants are found, not made, the next time.
    renders = announcer.renders
    assert await announcer.preview(request(repeat=1, areas=BOTH_COUNTIES)) == shown | {
        "regions": [slow, more]
    }
    assert announcer.renders == renders == 3


# -- through the engine and two terminals --------------------------------------------------


@needs_espeak
async def test_a_terminal_in_the_region_plays_its_variant_and_one_outside_the_default(
    redis_url: str, mqtt_url: str, watch: Watch, tmp_path: Path
) -> None:
    body = alert_body(areas=BOTH_COUNTIES, repeat=1)
    inside_out, outside_out = tmp_path / "inside.wav", tmp_path / "outside.wav"
    inside_speech, outside_speech = RecordingPlayer(), RecordingPlayer()
    async with audio_engine(redis_url, mqtt_url, tmp_path / "state", regions=[SLOW_GULOU]) as api:
        inside_player = AudioPlayer(inside_speech, out_file=inside_out)
        outside_player = AudioPlayer(outside_speech, out_file=outside_out)
        inside = await terminal_in(api, ZHONGSHAN, inside_player)
        outside = await terminal_in(api, TAIJIANG_VILLAGE, outside_player)
        preview = await api.post("/api/v1/alerts?dry_run=1", headers=PROVINCE, json=body)
        assert preview.status == 200, await preview.text()
        audio = (await preview.json())["audio"]
        [variant] = audio.pop("regions")
        assert variant["code"] == "350102"
        assert (variant["speed"], variant["repeat"]) == (100, 2)
        assert variant["sha256"] != audio["sha256"]
        assert variant["duration"] > 2 * audio["duration"]  # twice, and slower
        async with running(inside), running(outside):
            issued = await api.post("/api/v1/alerts", headers=PROVINCE, json=body)
            assert issued.status == 201, await issued.text()
            alert_id = (await issued.json())["id"]
            await wait_for(lambda: played(watch, alert_id, inside, outside), message="played")
        assert api.app[ANNOUNCER].renders == 2  # the preview's two; dispatch found them
    # The signed payload both got names the variant, covered by the signature.
    payload = signed_payload(inside, alert_id)
    assert payload["audio"] == audio
    assert payload["audio_regions"] == [variant]
    assert signed_payload(outside, alert_id)["audio_regions"] == [variant]
    # Zhongshan (350102…) played the slow variant, Taijiang (350103…) the default.
    assert inside_player.played_audio == [variant["sha256"]]
    assert hashlib.sha256(inside_out.read_bytes()).hexdigest() == variant["sha256"]
    assert outside_player.played_audio == [audio["sha256"]]
    assert hashlib.sha256(outside_out.read_bytes()).hexdigest() == audio["sha256"]
    assert inside_speech.played == outside_speech.played == []


async def test_speech_text_is_spoken_at_the_regions_pace_and_the_sms_keeps_the_text(
    redis_url: str, mqtt_url: str, watch: Watch, tmp_path: Path
) -> None:
    """No audio rendered (a yellow alert, never previewed): the terminals speak, saying
    ``speech_text``; Gulou's at its speed and with its extra pass, Taijiang's as before."""
    words = "大雾来了，老人请留在家中。"
    body = alert_body(
        areas=BOTH_COUNTIES,
        severity="yellow",
        headline="大雾黄色预警",
        text="预计未来6小时能见度低于200米。",
        instruction="请减速慢行。",
        speech_text=words,
        repeat=2,
    )
    inside_speech, outside_speech = RecordingPlayer(), RecordingPlayer()
    async with audio_engine(redis_url, mqtt_url, tmp_path / "state", regions=[SLOW_GULOU]) as api:
        inside = await terminal_in(api, ZHONGSHAN, AudioPlayer(inside_speech))
        outside = await terminal_in(api, TAIJIANG_VILLAGE, AudioPlayer(outside_speech))
        async with running(inside), running(outside):
            issued = await api.post("/api/v1/alerts", headers=PROVINCE, json=body)
            assert issued.status == 201, await issued.text()
            alert_id = (await issued.json())["id"]
            await wait_for(lambda: played(watch, alert_id, inside, outside), message="played")
        assert api.app[ANNOUNCER].renders == 0
    payload = signed_payload(inside, alert_id)
    assert payload["speech_text"] == words
    assert payload["audio"] is None
    assert payload["audio_regions"] == [{"code": "350102", "speed": 100, "repeat": 3}]
    [said] = inside_speech.played
    assert isinstance(said, SpokenPlay)
    assert said.text == f"黄色预警。大雾黄色预警。{words}"
    assert (said.speed, said.alert.repeat) == (100, 3)
    [elsewhere] = outside_speech.played
    assert elsewhere.text == said.text
    assert getattr(elsewhere, "speed", None) is None
    assert elsewhere.alert.repeat == 2


@pytest.mark.parametrize(
    ("sms_text", "said"), [(None, "能见度低于200米"), ("大雾，请减速。", "大雾，请减速。")]
)
def test_the_sms_keeps_sms_text_or_text_whatever_the_loudspeakers_say(
    sms_text: str | None, said: str
) -> None:
    req = AlertRequest.model_validate(
        alert_body(
            text="预计未来6小时能见度低于200米。",
            speech_text="大雾来了，老人请留在家中。",
            sms_text=sms_text,
            channels=["loudspeaker", "sms"],
        )
    )
    sms = SmsTextPreview(SmsSettings(), {"fj-province": "福建应急"}).texts("fj-province", req)
    assert said in sms["zh"].text
    assert "老人请留在家中" not in sms["zh"].text


# -- bad settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"code": "359999"}, "audio.regions[0].code"),
        pytest.param(
            {"code": "3501", "voice": "no-such-voice"}, "audio.regions[0].voice", marks=needs_espeak
        ),
    ],
)
async def test_a_wrong_region_entry_stops_the_engine_naming_the_key(
    redis_url: str, mqtt_url: str, tmp_path: Path, entry: dict[str, Any], message: str
) -> None:
    settings = engine_settings(redis_url, mqtt_url, tmp_path, audio={"regions": [entry]})
    with pytest.raises(ConfigError) as caught:
        create_app(settings, tree=fujian())
    assert message in str(caught.value)
