"""The announcement's words and sound, without espeak-ng: the script is what terminals say,
the cache key follows what shapes the sound and nothing else, WAV input is checked, and
repeats stop at the length limit."""

from __future__ import annotations

import io
import json
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.loudspeaker.announcement import Announcer, AudioSettings, _repeated, script
from adapters.loudspeaker.payload import alert_payload, encode_alert
from adapters.loudspeaker.tts import Pcm, PcmFormat, read_wav, silence, write_wav
from dispatcher.core.errors import ValidationFailed
from dispatcher.core.models import Alert, AlertRequest
from receiver.brain import parse_alert, render_announcement
from tests.helpers import alert_body


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
