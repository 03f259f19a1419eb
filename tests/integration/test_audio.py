"""The announcement as audio, engine side: rendered once by espeak-ng (chime, words, repeats),
stored by its hash, heard at preview time, carried in the signed payload when ready and never
waited for when not; an office's recording taken only when it is sound PCM WAV; the files
served to anyone by exact hash names and to nobody by any other name."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import os
import shutil
import struct
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.loudspeaker.announcement import Announcer, AudioSettings
from adapters.loudspeaker.tts import PcmFormat, chime, write_wav
from dispatcher.app import ANNOUNCER, create_app
from dispatcher.core.models import AlertRequest
from dispatcher.embedded.processes import free_port
from receiver.simulator import SimTerminal
from tests.helpers import ZHONGSHAN, fujian, unique, wait_for
from tests.integration.engine import (
    PROVINCE,
    TAIJIANG,
    Client,
    alert_body,
    dispatched,
    engine_settings,
    register,
)

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (`sudo apt-get install espeak-ng`; `make deps` tries)",
)


@asynccontextmanager
async def audio_engine(
    redis_url: str, mqtt_url: str, state_dir: Path, **audio: Any
) -> AsyncIterator[Client]:
    """The engine on a port known beforehand, so ``audio.base_url`` (what payloads name) is
    where it really answers."""
    for attempt in range(1, 6):
        port = free_port()
        settings = engine_settings(
            redis_url,
            mqtt_url,
            state_dir,
            audio={"base_url": f"http://127.0.0.1:{port}", **audio},
        )
        server = TestServer(create_app(settings, tree=fujian()), port=port)
        try:
            await server.start_server()
        except OSError as exc:
            await server.close()
            if exc.errno != errno.EADDRINUSE or attempt == 5:
                raise
            continue
        break
    async with TestClient(server) as client:
        # A terminal where the tests' alerts go, so a preview has something to reach.
        await register(client, [SimTerminal(unique("aud"), ZHONGSHAN)])
        yield client


def wav_info(data: bytes) -> tuple[wave._wave_params, float]:
    with wave.open(io.BytesIO(data), "rb") as w:
        params = w.getparams()
    return params, params.nframes / params.framerate


def request(**fields: Any) -> AlertRequest:
    return AlertRequest.model_validate(alert_body(**fields))


# -- rendering ---------------------------------------------------------------------------


@needs_espeak
async def test_the_announcement_is_a_wav_that_grows_with_repeat(tmp_path: Path) -> None:
    announcer = Announcer(AudioSettings(), tmp_path / "audio", "http://engine.test")
    once = await announcer.render(request(repeat=1))
    thrice = await announcer.render(request(repeat=3))
    assert once is not None
    assert thrice is not None
    assert once["url"] == f"http://engine.test/audio/{once['sha256']}.wav"
    assert once["codec"] == "wav"
    for described in (once, thrice):
        data = (tmp_path / "audio" / f"{described['sha256']}.wav").read_bytes()
        assert hashlib.sha256(data).hexdigest() == described["sha256"]
        params, seconds = wav_info(data)
        assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, 22050)
        assert seconds == pytest.approx(described["duration"], abs=0.01)
    # Chime (3 s) and the words, then a pause: a pass is several seconds; three are three.
    assert once["duration"] > 5
    assert thrice["duration"] == pytest.approx(3 * once["duration"], rel=0.01)


@needs_espeak
async def test_the_same_content_renders_once(tmp_path: Path) -> None:
    folder = tmp_path / "audio"
    first = Announcer(AudioSettings(), folder, "http://engine.test")
    made = await first.render(request())
    assert made is not None
    assert first.renders == 1
    path = folder / f"{made['sha256']}.wav"
    written = path.stat().st_mtime_ns
    assert await first.render(request()) == made
    assert first.renders == 1
    # Another engine life on the same folder, with no espeak-ng at all: found, not rendered.
    again = Announcer(AudioSettings(espeak="no-such-espeak"), folder, "http://engine.test")
    assert await again.render(request()) == made
    assert again.descriptor(request()) == made
    assert again.renders == 0
    assert path.stat().st_mtime_ns == written
    # Other words are another announcement.
    other = await first.render(request(text="预计未来6小时降雨量将达50毫米以上。"))
    assert other is not None
    assert other["sha256"] != made["sha256"]


async def test_without_espeak_a_preview_has_no_audio_and_says_nothing_wrong(
    tmp_path: Path,
) -> None:
    announcer = Announcer(AudioSettings(espeak="no-such-espeak"), tmp_path, "http://e")
    assert await announcer.render(request()) is None
    assert announcer.renders == 0


def test_the_chime_is_two_tones_in_any_format() -> None:
    for fmt in (
        PcmFormat(),
        PcmFormat(44_100, 2, 2),
        PcmFormat(8_000, 1, 1),
        PcmFormat(48_000, 2, 3),
    ):
        sound = chime(fmt)
        params, seconds = wav_info(write_wav(sound))
        assert (params.framerate, params.nchannels, params.sampwidth) == (
            fmt.rate,
            fmt.channels,
            fmt.width,
        )
        assert seconds == pytest.approx(3.0, abs=0.01)


# -- through the engine ------------------------------------------------------------------


@needs_espeak
async def test_a_preview_renders_the_announcement_and_the_engine_serves_it(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    async with audio_engine(redis_url, mqtt_url, tmp_path / "state") as api:
        answer = await api.post("/api/v1/alerts?dry_run=1", headers=PROVINCE, json=alert_body())
        assert answer.status == 200, await answer.text()
        audio = (await answer.json())["audio"]
        assert audio["url"] == f"http://127.0.0.1:{api.port}/audio/{audio['sha256']}.wav"
        # No token: terminals have none for HTTP.
        served = await api.get(f"/audio/{audio['sha256']}.wav")
        assert served.status == 200
        body = await served.read()
        assert hashlib.sha256(body).hexdigest() == audio["sha256"]
        assert served.headers["Content-Type"] == "audio/wav"
        assert served.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert served.headers["ETag"] == f'"{audio["sha256"]}"'
        again = await api.get(
            f"/audio/{audio['sha256']}.wav", headers={"If-None-Match": served.headers["ETag"]}
        )
        assert again.status == 304
        # The previews endpoint shows the same announcement, from the cache.
        shown = await api.post("/api/v1/previews", headers=PROVINCE, json=alert_body())
        assert (await shown.json())["audio"] == audio
        assert api.app[ANNOUNCER].renders == 1


@pytest.mark.parametrize(
    "name",
    [
        "0" * 64 + ".wav",  # the right shape, no such file
        "..%2f..%2fstate%2fsecrets",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "A" * 64 + ".wav",  # upper-case hex is not a name the engine makes
        "0" * 64 + ".json",  # the metadata beside each file is not served
        "0" * 64 + ".wav.tmp",
    ],
)
async def test_unknown_and_crafted_audio_names_are_404(api: Client, name: str) -> None:
    response = await api.get(f"/audio/{name}")
    assert response.status == 404
    assert "names are <sha256>.wav" in (await response.json())["error"]["message"]


@pytest.mark.parametrize(
    "raw",
    [
        "/audio/../../../../etc/passwd",
        "/audio/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/audio/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/audio/..\\..\\etc\\passwd",
    ],
)
async def test_traversal_in_the_raw_path_never_leaves_the_audio_folder(
    api: Client, raw: str
) -> None:
    """Sent byte for byte (no client normalises it): refused by the name pattern."""
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(f"GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    status = answer.split(b"\r\n", 1)[0]
    assert status == b"HTTP/1.1 404 Not Found", (raw, status)
    assert b"root:" not in answer


@needs_espeak
async def test_an_alert_issued_after_its_preview_carries_the_audio(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    """The signed payload itself is checked by a terminal in test_receiver_audio.py; here the
    engine's own encoder, as the dispatch worker calls it, finds the preview's render."""
    async with audio_engine(redis_url, mqtt_url, tmp_path / "state") as api:
        preview = await api.post("/api/v1/alerts?dry_run=1", headers=PROVINCE, json=alert_body())
        audio = (await preview.json())["audio"]
        issued = await api.post("/api/v1/alerts", headers=PROVINCE, json=alert_body())
        assert issued.status == 201
        alert_id = (await issued.json())["id"]
        announcer = api.app[ANNOUNCER]
        assert announcer.descriptor(request()) == audio
        await wait_for(lambda: dispatched(api, alert_id), message="alert dispatched")
        assert announcer.renders == 1


# -- never waiting -----------------------------------------------------------------------


def gated_espeak(folder: Path) -> tuple[Path, Path]:
    """An espeak-ng that waits until a line is written to its gate (a FIFO) before speaking:
    a render that cannot finish before the test lets it."""
    gate = folder / "gate"
    os.mkfifo(gate)
    script = folder / "slow-espeak"
    real = shutil.which("espeak-ng")
    script.write_text(f'#!/bin/sh\nread line < "{gate}"\nexec "{real}" "$@"\n', encoding="ascii")
    script.chmod(0o755)
    return script, gate


def open_gate(gate: Path) -> None:
    with gate.open("w", encoding="ascii") as fifo:  # blocks until the render reads it
        fifo.write("go\n")


@needs_espeak
async def test_a_warning_never_waits_for_its_render(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    slow, gate = gated_espeak(tmp_path)
    async with audio_engine(
        redis_url, mqtt_url, tmp_path / "state", espeak=str(slow), preview_wait=0
    ) as api:
        announcer = api.app[ANNOUNCER]
        issued = await api.post("/api/v1/alerts", headers=PROVINCE, json=alert_body())
        alert_id = (await issued.json())["id"]
        # Dispatched while the render is stuck at the gate: its payload went without audio.
        await wait_for(lambda: dispatched(api, alert_id), message="alert dispatched")
        assert announcer.renders == 0
        assert announcer.descriptor(request()) is None
        # A preview that may not wait answers at once, without audio, the render still stuck.
        shown = await api.post("/api/v1/previews", headers=PROVINCE, json=alert_body())
        assert (await shown.json())["audio"] is None
        await asyncio.to_thread(open_gate, gate)
        await wait_for(lambda: announcer.renders == 1, message="render finished")
        # Later previews and resends have it.
        shown = await api.post("/api/v1/previews", headers=PROVINCE, json=alert_body())
        audio = (await shown.json())["audio"]
        assert audio is not None
        assert announcer.descriptor(request()) == audio
        assert announcer.renders == 1


# -- recordings --------------------------------------------------------------------------


def recording(seconds: float = 1.0, fmt: PcmFormat = PcmFormat(16_000, 1, 2)) -> bytes:  # noqa: B008
    frames = b"\x00\x01" * fmt.channels * int(seconds * fmt.rate)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(fmt.channels)
        w.setsampwidth(fmt.width)
        w.setframerate(fmt.rate)
        w.writeframes(frames[: int(seconds * fmt.rate) * fmt.frame_bytes])
    return out.getvalue()


def float_wav() -> bytes:
    """A WAV of 32-bit float samples (format tag 3): not linear PCM."""
    data = struct.pack("<4f", 0.0, 0.5, -0.5, 0.0)
    fmt = struct.pack("<HHIIHH", 3, 1, 16_000, 64_000, 4, 32)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


async def upload(api: Client, body: bytes, kind: str = "audio/wav") -> Any:
    return await api.post("/api/v1/audio", headers={**PROVINCE, "Content-Type": kind}, data=body)


async def test_an_uploaded_recording_is_stored_and_an_alert_plays_it(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    async with audio_engine(redis_url, mqtt_url, tmp_path / "state") as api:
        answer = await upload(api, recording(2.0))
        assert answer.status == 201, await answer.text()
        stored = await answer.json()
        assert stored["duration"] == pytest.approx(2.0)
        assert stored["codec"] == "wav"
        served = await api.get(f"/audio/{stored['sha256']}.wav")
        assert hashlib.sha256(await served.read()).hexdigest() == stored["sha256"]
        # The same bytes again: the same file.
        assert (await (await upload(api, recording(2.0))).json()) == stored
        # An alert naming it: the preview builds chime + recording × repeat.
        body = alert_body(recording=stored["sha256"], repeat=2)
        preview = await api.post("/api/v1/alerts?dry_run=1", headers=PROVINCE, json=body)
        assert preview.status == 200, await preview.text()
        audio = (await preview.json())["audio"]
        assert audio["sha256"] != stored["sha256"]
        assert audio["duration"] == pytest.approx(2 * (3.0 + 2.0 + 1.5), abs=0.05)
        issued = await api.post("/api/v1/alerts", headers=PROVINCE, json=body)
        assert issued.status == 201, await issued.text()
        assert api.app[ANNOUNCER].descriptor(request(recording=stored["sha256"], repeat=2)) == audio


async def test_an_alert_naming_an_unknown_recording_is_refused(api: Client) -> None:
    body = alert_body(recording="ab" * 32)
    for path in ("/api/v1/alerts", "/api/v1/alerts?dry_run=1"):
        response = await api.post(path, headers=PROVINCE, json=body)
        assert response.status == 422
        error = (await response.json())["error"]
        assert "upload it first (POST /api/v1/audio)" in error["message"]
        assert error["details"][0]["field"] == "recording"
    bad = await api.post("/api/v1/alerts", headers=PROVINCE, json=alert_body(recording="x.wav"))
    assert bad.status == 422


@pytest.mark.parametrize(
    ("body", "kind", "status", "message"),
    [
        (os.urandom(4000), "audio/wav", 422, "not a WAV file"),
        (b"RIFF\x00\x00\x00\x00WAVEjunkjunk", "audio/wav", 422, "not a readable PCM WAV file"),
        (float_wav(), "audio/wav", 422, "not linear PCM"),
        (recording(1.0)[:2000], "audio/wav", 422, "cut short"),
        (recording(0.5, PcmFormat(96_000, 1, 2)), "audio/wav", 422, "96000 Hz"),
        (recording(1.0), "audio/mpeg", 415, "send PCM WAV"),
        (recording(1.0), "audio/ogg", 415, "no MP3/Ogg decoder"),
        (recording(1.0), "text/plain", 415, "Content-Type: audio/wav"),
        (os.urandom(4000), "application/octet-stream", 422, "not a WAV file"),
    ],
    ids=["random", "garbage-header", "float", "truncated", "rate", "mp3", "ogg", "text", "octets"],
)
async def test_what_is_not_a_sound_recording_is_refused_saying_why(
    api: Client, body: bytes, kind: str, status: int, message: str
) -> None:
    response = await upload(api, body, kind)
    assert response.status == status, await response.text()
    assert message in (await response.json())["error"]["message"]


async def test_too_large_and_too_long_recordings_are_refused(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    async with audio_engine(
        redis_url,
        mqtt_url,
        tmp_path / "state",
        max_upload_bytes=200_000,
        max_recording_seconds=3,
    ) as api:
        large = await upload(api, recording(10.0))  # 320 kB
        assert large.status == 413
        assert "over 200000 bytes" in (await large.json())["error"]["message"]
        long = await upload(api, recording(5.0, PcmFormat(8_000, 1, 1)))  # 40 kB, 5 s
        assert long.status == 422
        assert "lasts 5.0 s, over the 3 s allowed" in (await long.json())["error"]["message"]


async def test_uploading_needs_a_token(api: Client) -> None:
    response = await api.post(
        "/api/v1/audio", headers={"Content-Type": "audio/wav"}, data=recording()
    )
    assert response.status == 401


async def test_repeats_stop_before_the_announcement_grows_too_long(tmp_path: Path) -> None:
    settings = AudioSettings(max_announcement_seconds=12)
    announcer = Announcer(settings, tmp_path, "http://engine.test")
    stored = await announcer.upload(recording(3.0), "audio/wav")
    # One pass is chime (3 s) + 3 s + pause (1.5 s) = 7.5 s: 5 asked, 1 fits in 12 s.
    made = await announcer.render(request(recording=stored["sha256"], repeat=5))
    assert made is not None
    assert made["duration"] == pytest.approx(7.5, abs=0.05)
    # A pass longer than the limit still plays once.
    short = Announcer(AudioSettings(max_announcement_seconds=1), tmp_path, "http://e")
    once = await short.render(request(recording=stored["sha256"], repeat=5))
    assert once is not None
    assert once["duration"] == pytest.approx(7.5, abs=0.05)


@needs_espeak
async def test_at_dispatch_only_an_actual_red_or_orange_warning_starts_its_render(
    tmp_path: Path,
) -> None:
    # Issue 15: every queue serves actual red and orange warnings first; the others are
    # rendered when previewed, so a burst of county alerts queues no renders beside a wave.
    settings = AudioSettings(dispatch_render_delay=0.05)
    announcer = Announcer(settings, tmp_path / "audio", "http://engine.test")
    yellow = request(severity="yellow", headline="暴雨黄色预警")
    drill = request(status="exercise", headline="台风红色预警（演练）")
    red = request()
    assert announcer.descriptor(yellow) is None
    assert announcer.descriptor(drill) is None
    assert announcer.descriptor(red) is None  # not rendered yet: the warning goes out without
    await wait_for(
        lambda: announcer.renders == 1 and announcer.descriptor(red) is not None,
        timeout=30,
        message="the red warning's announcement rendered after its dispatch",
    )
    assert announcer.renders == 1  # the yellow and the drill were not rendered
    assert await announcer.render(yellow, wait=30) is not None  # a preview renders it
    assert announcer.renders == 2


@needs_espeak
async def test_an_issued_alert_can_be_listened_to_and_then_its_resends_carry_it(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    fields = {"severity": "yellow", "headline": "暴雨黄色预警"}
    async with audio_engine(redis_url, mqtt_url, tmp_path / "state") as api:
        issued = await api.post("/api/v1/alerts", headers=PROVINCE, json=alert_body(**fields))
        assert issued.status == 201
        alert_id = (await issued.json())["id"]
        announcer = api.app[ANNOUNCER]
        # Issued without a preview: it went out with audio null, and nothing was rendered.
        assert announcer.descriptor(request(**fields)) is None
        assert announcer.renders == 0
        listened = await api.get(f"/api/v1/alerts/{alert_id}/audio", headers=PROVINCE)
        assert listened.status == 200
        answer = await listened.json()
        assert answer["alert_id"] == alert_id
        audio = answer["audio"]
        assert audio["url"].endswith(f"/audio/{audio['sha256']}.wav")
        served = await api.get(f"/audio/{audio['sha256']}.wav")
        assert served.status == 200
        assert hashlib.sha256(await served.read()).hexdigest() == audio["sha256"]
        # From now on what the engine publishes for it (its resends) names that file.
        assert announcer.descriptor(request(**fields)) == audio
        # Another county's office sees no more of it than of the alert itself.
        foreign = await api.get(f"/api/v1/alerts/{alert_id}/audio", headers=TAIJIANG)
        assert foreign.status in (403, 404)
        unknown = await api.get("/api/v1/alerts/no-such-alert/audio", headers=PROVINCE)
        assert unknown.status == 404
