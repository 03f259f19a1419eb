"""The announcement's words and sound, without espeak-ng: the script is what terminals say,
the cache key follows what shapes the sound and nothing else, WAV input is checked, and
repeats stop at the length limit."""

from __future__ import annotations

import io
import json
import shutil
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.loudspeaker.announcement import Announcer, AudioSettings, _repeated, script
from adapters.loudspeaker.payload import alert_payload, encode_alert
from adapters.loudspeaker.tts import Pcm, PcmFormat, read_wav, silence, write_wav
from dispatcher.core.errors import ConfigError, ValidationFailed
from dispatcher.core.models import Alert, AlertRequest
from dispatcher.core.preview import preview_digest
from receiver.audio import SpokenPlay, accessibility, spoken
from receiver.brain import Play, parse_alert, render_announcement
from tests.helpers import alert_body, fujian

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"
)


def issued(**fields: object) -> Alert:
    return Alert.issue(
        AlertRequest.model_validate(alert_body(**fields)),
        office_id="fj-province",
        office_name="福建省应急管理厅",
        areas=["350102"],
        sent=datetime.now(UTC) - timedelta(seconds=1),
    )


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"status": "exercise"},
        {"instruction": None},
        {"severity": "blue", "text": "大雾。"},
        {"headline": "Rainstorm warning", "text": "Heavy rain.", "instruction": "Stay in."},
    ],
)
def test_the_engine_says_what_the_reference_terminal_says(fields: dict[str, object]) -> None:
    alert = issued(**fields)
    terminal = parse_alert(encode_alert(alert))
    assert script(alert) == render_announcement(terminal)


def test_the_script_opens_with_the_colour_in_mandarin() -> None:
    assert script(issued()).startswith("红色预警。台风红色预警。")
    assert script(issued(status="exercise")).startswith("演练：红色预警。")


def test_the_key_follows_the_sound_and_nothing_else(tmp_path: Path) -> None:
    announcer = Announcer(AudioSettings(), tmp_path, "http://e")
    base = announcer.key(issued())
    assert announcer.key(issued()) == base  # another id and time, the same words
    assert announcer.key(issued(areas=["350103"])) == base
    assert announcer.key(issued(repeat=2)) != base
    assert announcer.key(issued(text="大风。")) != base
    slower = Announcer(AudioSettings(speed=120), tmp_path, "http://e")
    assert slower.key(issued()) != base


def test_the_payload_carries_the_descriptor_it_is_given() -> None:
    audio = {"url": "http://e/audio/" + "a" * 64 + ".wav", "sha256": "a" * 64}
    assert alert_payload(issued())["audio"] is None
    assert json.loads(encode_alert(issued(), lambda _: audio))["audio"] == audio


def _wav(rate: int = 16_000, channels: int = 1, width: int = 2, frames: int = 1600) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x01" * frames * channels * width)
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a WAV file"),
        (b"ID3\x04" + bytes(100), "not a WAV file"),
        (_wav(rate=4000), "a sample rate of 4000 Hz"),
        (_wav(rate=192_000), "a sample rate of 192000 Hz"),
        (_wav()[:60], "cut short"),
        (_wav(frames=0), "cut short"),
    ],
)
def test_bad_wav_input_is_refused_saying_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ValidationFailed, match=message):
        read_wav(data)


def test_good_wav_input_round_trips() -> None:
    pcm = read_wav(_wav(22_050, 2, 2, 22_050))
    assert pcm.fmt == PcmFormat(22_050, 2, 2)
    assert pcm.seconds == pytest.approx(1.0)
    assert read_wav(write_wav(pcm)) == pcm


def test_repeats_are_capped_by_count_and_by_length() -> None:
    body = silence(PcmFormat(8_000, 1, 1), 1.0)
    one = _repeated(body, 0.5, 1, 1e6).seconds  # chime 3 s + 1 s + 0.5 s
    assert one == pytest.approx(4.5)
    assert _repeated(body, 0.5, 3, 1e6).seconds == pytest.approx(3 * one)
    assert _repeated(body, 0.5, 50, 1e6).seconds == pytest.approx(10 * one)
    assert _repeated(body, 0.5, 5, 10).seconds == pytest.approx(2 * one)
    assert _repeated(body, 0.5, 5, 1).seconds == pytest.approx(one)
    assert isinstance(body, Pcm)


# -- accessibility: per-region settings, variants, the loudspeaker's own words -------------


def regional(*entries: dict[str, object]) -> AudioSettings:
    return AudioSettings.model_validate({"regions": list(entries)})


@pytest.mark.parametrize(
    ("entry", "where", "message"),
    [
        ({"code": "35x1"}, "regions.0.code", "is malformed"),
        ({"code": "350"}, "regions.0.code", "is malformed"),
        ({"code": "3501", "speed": 50}, "regions.0.speed", "greater than or equal to 80"),
        ({"code": "3501", "speed": 451}, "regions.0.speed", "less than or equal to 450"),
        ({"code": "3501", "extra_repeats": 6}, "regions.0.extra_repeats", "less than or equal"),
        ({"code": "3501", "extra_repeats": -1}, "regions.0.extra_repeats", "greater than"),
        ({"code": "3501", "voice": "cmn; rm -rf /"}, "regions.0.voice", "pattern"),
        ({"code": "3501", "volume": 3}, "regions.0.volume", "Extra inputs"),
    ],
)
def test_bad_region_settings_are_refused_naming_the_key(
    entry: dict[str, object], where: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        regional(entry)
    [error] = caught.value.errors()
    assert ".".join(str(part) for part in error["loc"]) == where
    assert message in error["msg"]


def test_a_region_listed_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"region codes \['3501'\] appear more than once"):
        regional({"code": "3501"}, {"code": "350102"}, {"code": "3501", "speed": 100})


def test_a_region_not_in_the_tree_stops_the_start(tmp_path: Path) -> None:
    settings = regional({"code": "3501"}, {"code": "359999"})
    with pytest.raises(ConfigError, match=r"region 359999 is not in the region tree") as caught:
        Announcer(settings, tmp_path, "http://e", tree=fujian())
    assert "audio.regions[1].code" in str(caught.value)
    Announcer(regional({"code": "3501"}), tmp_path, "http://e", tree=fujian())  # fine


@needs_espeak
@pytest.mark.parametrize(
    ("voice", "message"),
    [
        ("klingon", "voice 'klingon' is not an installed espeak-ng voice"),
        ("hak", "cannot read Chinese characters"),
    ],
)
def test_a_voice_espeak_cannot_use_stops_the_start(
    tmp_path: Path, voice: str, message: str
) -> None:
    settings = regional({"code": "3501", "voice": voice})
    with pytest.raises(ConfigError, match=message) as caught:
        Announcer(settings, tmp_path, "http://e", tree=fujian())
    assert "audio.regions[0].voice" in str(caught.value)


@needs_espeak
def test_installed_voices_pass_the_start_check(tmp_path: Path) -> None:
    settings = regional({"code": "3501", "voice": "yue"}, {"code": "3502", "voice": "cmn+f3"})
    Announcer(settings, tmp_path, "http://e", tree=fujian())


def test_a_terminal_takes_the_longest_matching_code() -> None:
    settings = regional({"code": "3508"}, {"code": "350823", "speed": 100}, {"code": "3501"})
    assert settings.region_for("350823101001") == settings.regions[1]
    assert settings.region_for("350802001001") == settings.regions[0]
    assert settings.region_for("350102001001") == settings.regions[2]
    assert settings.region_for("350203001001") is None


def test_only_entries_meeting_the_areas_are_relevant() -> None:
    settings = regional({"code": "3508"}, {"code": "350823"}, {"code": "3501"})

    def codes(areas: list[str]) -> list[str]:
        return [e.code for e in settings.regions_meeting(areas)]

    assert codes(["35"]) == ["3508", "350823", "3501"]  # the province holds them all
    assert codes(["350823101"]) == ["3508", "350823"]  # a township inside both
    assert codes(["350802"]) == ["3508"]
    assert codes(["350203"]) == []


def test_a_variant_key_follows_its_settings(tmp_path: Path) -> None:
    settings = regional(
        {"code": "3501"},
        {"code": "3502", "speed": 100},
        {"code": "3503", "extra_repeats": 1},
        {"code": "3504", "voice": "yue"},
    )
    announcer = Announcer(settings, tmp_path, "http://e")
    alert = issued()
    keys = [announcer.key(alert, announcer.sound(entry)) for entry in settings.regions]
    # An entry that changes nothing is the default announcement; every other is its own.
    assert keys[0] == announcer.key(alert)
    assert len(set(keys)) == 4
    # One extra repeat is the same file as asking for one more repeat.
    assert keys[2] == announcer.key(issued(repeat=4))


def test_the_payload_lists_only_relevant_entries_and_omits_the_rest(tmp_path: Path) -> None:
    settings = regional({"code": "3501", "speed": 100, "extra_repeats": 2}, {"code": "3502"})
    announcer = Announcer(settings, tmp_path, "http://e")
    alert = issued(repeat=2, severity="yellow")  # not rendered at dispatch
    body = json.loads(encode_alert(alert, announcer.descriptor, announcer.regional))
    # Nothing rendered (no espeak-ng run here): the entry still tells a terminal's own speech.
    assert body["audio_regions"] == [{"code": "3501", "speed": 100, "repeat": 4}]
    assert "speech_text" not in body
    plain = alert_payload(issued())
    assert "audio_regions" not in plain
    assert "speech_text" not in plain


def test_speech_text_replaces_text_and_instruction_on_both_sides() -> None:
    alert = issued(speech_text="大风来了，老人请留在家中。")
    words = script(alert)
    assert words == "红色预警。台风红色预警。大风来了，老人请留在家中。"
    assert "12级" not in words
    payload = encode_alert(alert)
    assert json.loads(payload)["speech_text"] == "大风来了，老人请留在家中。"
    terminal = parse_alert(payload)
    spoken_item = spoken(Play(terminal), accessibility(payload), None)
    assert spoken_item.text == words
    # The text itself is unchanged for every other channel.
    assert json.loads(payload)["text"] == alert.text == "预计未来24小时将有12级以上大风。"


def test_a_region_entry_sets_the_terminals_own_speed_and_repeat() -> None:
    payload = json.dumps(
        alert_payload(issued(repeat=2), None, [{"code": "350102", "speed": 100, "repeat": 4}])
    ).encode()
    extra = accessibility(payload)
    entry = extra.for_region("350102001001")
    item = spoken(Play(parse_alert(payload)), extra, entry)
    assert isinstance(item, SpokenPlay)
    assert (item.speed, item.alert.repeat) == (100, 4)
    assert extra.for_region("350103001002") is None


@pytest.mark.parametrize(
    "entry",
    [
        {"code": "35x"},
        {"code": "3501", "speed": "slow"},
        {"code": "3501", "speed": 2000},
        {"code": "3501", "repeat": 0},
        "3501",
    ],
)
def test_a_terminal_skips_malformed_region_entries(entry: object) -> None:
    body = alert_payload(issued()) | {"audio_regions": [entry, {"code": "35", "speed": 90}]}
    extra = accessibility(json.dumps(body).encode())
    assert [e.code for e in extra.regions] == ["35"]


@pytest.mark.parametrize(
    ("speech_text", "message"),
    [
        ("请\x07转移", "contains control character U+0007 at position 1"),
        ("请\u202e转移", "contains bidi control character U+202E"),
        ("请转移\U0001f300", "which a loudspeaker cannot say"),
        ("长" * 1001, "at most 1000 characters"),
        ("", "at least 1 character"),
    ],
)
def test_bad_speech_text_is_refused_saying_what_is_wrong(speech_text: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AlertRequest.model_validate(alert_body(speech_text=speech_text))
    [error] = caught.value.errors()
    assert error["loc"] == ("speech_text",)
    assert message in error["msg"]


def test_speech_text_needs_the_loudspeaker_channel() -> None:
    with pytest.raises(ValidationError, match="speech_text needs 'loudspeaker' in channels"):
        AlertRequest.model_validate(alert_body(speech_text="请转移。", channels=["sms"]))


def test_the_preview_id_covers_speech_text_only_when_set() -> None:
    plain = AlertRequest.model_validate(alert_body())
    spoken_one = AlertRequest.model_validate(alert_body(speech_text="请转移。"))
    other = AlertRequest.model_validate(alert_body(speech_text="请马上转移。"))
    digests = {preview_digest("fj", ["350102"], r) for r in (plain, spoken_one, other)}
    assert len(digests) == 3
