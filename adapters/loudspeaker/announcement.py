"""An alert as the loudspeaker says it: rendered once, stored by its hash, never waited for.

The announcement is the attention chime, then the words (``[演练：]<colour>预警。headline。text。
instruction。``, as terminals say them), the pair repeated as the alert asks, in one WAV file;
or, when the office named an uploaded recording, the chime and that recording repeated.

Files live in ``state_dir/audio``, named by their SHA-256 (``<sha256>.wav``) with a small
``<sha256>.json`` beside each (codec, duration, kind), written atomically (temporary file,
then rename). ``renders/<key>`` remembers which file an announcement came out as, where the
key is the SHA-256 of everything that shapes the sound (script, voice, speed, repeats), so the
same content is rendered once however often it is previewed, issued or resent.

Rendering never delays a warning. ``descriptor`` (called by the payload encoder at dispatch)
only looks: a hit puts ``audio: {url, sha256, duration, codec}`` in the payload; a miss
starts the render in the background and the payload goes out at once with ``audio: null``
(terminals speak the text themselves). The preview (``render``) does wait, a bounded time, so
a composer can listen before sending and the send that follows finds it rendered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from pydantic import Field

from adapters.loudspeaker.tts import Pcm, PcmFormat, chime, concat, read_wav, silence, speak
from adapters.loudspeaker.tts import write_wav as wav_bytes
from dispatcher.core.config import Section
from dispatcher.core.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from dispatcher.core.gate import PriorityGate
from dispatcher.core.models import MsgType, Severity, Status

log = structlog.get_logger(__name__)

# Bump when the chime or the layout of an announcement changes: old renders are not reused.
LAYOUT_VERSION = 1
CODEC, EXT, CONTENT_TYPE = "wav", "wav", "audio/wav"
MAX_REPEAT = 10
# Bytes of no declared kind are taken too: they must still parse as PCM WAV.
WAV_TYPES = frozenset(
    {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "application/octet-stream"}
)
UNCHECKED_TYPES = frozenset({"audio/mpeg", "audio/mp3", "audio/ogg", "audio/opus"})
FILE_NAME = re.compile(r"^([0-9a-f]{64})\.wav$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COLOUR = {
    Severity.RED: "红色",
    Severity.ORANGE: "橙色",
    Severity.YELLOW: "黄色",
    Severity.BLUE: "蓝色",
}
_CJK = re.compile(r"[\u3400-\u9fff]")


class AudioSettings(Section):
    """``[audio]``: the announcements the engine renders and the recordings it takes."""

    # Where terminals fetch ``/audio/<sha256>.wav`` from, e.g. "https://ebd.example.cn";
    # unset: ``http://`` and ``api.listen`` (right only when terminals reach that address).
    base_url: str | None = Field(default=None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    # espeak-ng's voice for Chinese (``cmn``: Mandarin) and for texts in English.
    voice: str = Field(default="cmn", pattern=r"^[A-Za-z0-9_+-]{1,40}$")
    english_voice: str = Field(default="en", pattern=r"^[A-Za-z0-9_+-]{1,40}$")
    # Words a minute (espeak-ng's default is 175; slower carries better outdoors).
    speed: int = Field(default=150, ge=80, le=450)
    espeak: str = "espeak-ng"
    # A render that takes longer is abandoned (the terminals speak the text).
    render_timeout: float = Field(default=60.0, gt=0, le=600)
    # How long a preview waits for its announcement before answering without it.
    preview_wait: float = Field(default=15.0, ge=0, le=120)
    # Uploaded recordings: at most this many bytes and seconds.
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=200 * 1024 * 1024)
    max_recording_seconds: float = Field(default=300.0, gt=0, le=3600)
    # Repeats stop before a whole announcement passes this length (one pass always plays).
    max_announcement_seconds: float = Field(default=900.0, gt=0, le=7200)


class Spoken(Protocol):
    """What shapes an announcement: an ``AlertRequest`` (preview) or an ``Alert`` (dispatch)."""

    @property
    def status(self) -> Status: ...
    @property
    def msg_type(self) -> MsgType: ...
    @property
    def severity(self) -> Severity: ...
    @property
    def headline(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def instruction(self) -> str | None: ...
    @property
    def repeat(self) -> int: ...
    @property
    def recording(self) -> str | None: ...


def _urgent(alert: Spoken) -> bool:
    """An actual red or orange warning (``dispatcher.core.models.Alert.urgent``)."""
    return alert.status is Status.ACTUAL and alert.severity in (Severity.RED, Severity.ORANGE)


def script(alert: Spoken) -> str:
    """The words, as the reference terminal says them (``receiver.brain.render_announcement``):
    ``[演练：]<colour>预警。headline。text。instruction。``; a cancel
    ``【解除】headline，现已解除。``."""
    english = not _CJK.search(f"{alert.headline}{alert.text}")
    if alert.msg_type is MsgType.CANCEL:
        words = (
            f"Cancelled: {alert.headline}. The warning is lifted."
            if english
            else f"【解除】{alert.headline}，现已解除。"
        )
    else:
        colour = (
            f"{alert.severity.value.capitalize()} warning"
            if english
            else f"{_COLOUR[alert.severity]}预警"
        )
        parts = [colour, alert.headline, alert.text, alert.instruction or ""]
        words = (" " if english else "").join(
            _sentence(p.strip(), english) for p in parts if p.strip()
        )
    if alert.status is Status.EXERCISE:
        words = f"Drill: {words}" if english else f"演练：{words}"
    return words


def _sentence(part: str, english: bool) -> str:
    return part if part[-1] in "。！？!?." else part + ("." if english else "。")


@dataclass(frozen=True, slots=True)
class AudioFile:
    sha256: str
    duration: float  # seconds
    kind: str  # "announcement" | "recording"
    codec: str = CODEC

    def descriptor(self, base_url: str) -> dict[str, Any]:
        """The payload's ``audio`` object (docs/protocol.md)."""
        return {
            "url": f"{base_url.rstrip('/')}/audio/{self.sha256}.{EXT}",
            "sha256": self.sha256,
            "duration": round(self.duration, 3),
            "codec": self.codec,
        }


class AudioLibrary:
    """The files: ``<sha256>.wav`` + ``<sha256>.json``, and ``renders/<key>`` → sha256."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, sha256: str) -> Path:
        return self.folder / f"{sha256}.{EXT}"

    def get(self, sha256: str) -> AudioFile | None:
        if not SHA256.match(sha256):
            return None
        try:
            meta = json.loads((self.folder / f"{sha256}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not self.path(sha256).is_file():
            return None
        return AudioFile(sha256, float(meta["duration"]), str(meta["kind"]), str(meta["codec"]))

    def rendered(self, key: str) -> AudioFile | None:
        try:
            sha256 = (self.folder / "renders" / key).read_text(encoding="ascii").strip()
        except OSError:
            return None
        return self.get(sha256)

    def put(self, data: bytes, *, duration: float, kind: str, key: str | None = None) -> AudioFile:
        """Store ``data`` under its hash (once: an existing file is kept as it is)."""
        sha256 = hashlib.sha256(data).hexdigest()
        found = AudioFile(sha256, duration, kind)
        if self.get(sha256) is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.path(sha256), data)
            meta = {"sha256": sha256, "codec": CODEC, "duration": duration, "kind": kind}
            _atomic_write(self.folder / f"{sha256}.json", json.dumps(meta).encode())
        if key is not None:
            (self.folder / "renders").mkdir(parents=True, exist_ok=True)
            _atomic_write(self.folder / "renders" / key, sha256.encode())
        return self.get(sha256) or found


def _atomic_write(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        Path(temporary).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise


@functools.lru_cache(maxsize=8)
def _chime(fmt: PcmFormat) -> Pcm:
    return chime(fmt)


def _repeated(body: Pcm, pause: float, repeat: int, limit: float) -> Pcm:
    """Chime, body and pause, as many times as asked while the whole stays within ``limit``
    seconds (once at least)."""
    one = concat([_chime(body.fmt), body, silence(body.fmt, pause)])
    times = max(1, min(repeat, MAX_REPEAT, int(limit // max(one.seconds, 0.001))))
    return Pcm(body.fmt, one.frames * times)


class Announcer:
    """Renders, stores and finds announcements; takes recordings (see the module docstring)."""

    def __init__(self, settings: AudioSettings, folder: Path, base_url: str) -> None:
        self.settings = settings
        self.library = AudioLibrary(folder)
        self.base_url = base_url
        self.renders = 0  # renders actually made (not found), for tests and logs
        self._running: dict[str, asyncio.Task[AudioFile]] = {}
        # Two CPUs are shared with dispatch: one render at a time, actual red and orange
        # warnings' first (issue 15: every queue serves them before the others).
        self._gate = PriorityGate()

    # -- keys ------------------------------------------------------------------------------

    def key(self, alert: Spoken) -> str:
        """What the sound of ``alert`` depends on, hashed."""
        s = self.settings
        shape: dict[str, object] = {
            "layout": LAYOUT_VERSION,
            "repeat": min(max(alert.repeat, 1), MAX_REPEAT),
            "limit": s.max_announcement_seconds,
        }
        if alert.recording is not None:
            shape |= {"recording": alert.recording}
        else:
            words = script(alert)
            voice = s.voice if _CJK.search(words) else s.english_voice
            shape |= {"script": words, "voice": voice, "speed": s.speed}
        canonical = json.dumps(shape, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    # -- at dispatch: look, never wait -----------------------------------------------------

    def descriptor(self, alert: Spoken) -> dict[str, Any] | None:
        """The payload's ``audio`` for ``alert`` if its announcement is rendered; else None
        (or the bare recording, when it names one) and the render is started for later."""
        if alert.msg_type is MsgType.CANCEL and not alert.headline:
            return None
        key = self.key(alert)
        found = self.library.rendered(key)
        if found is not None:
            return found.descriptor(self.base_url)
        if _urgent(alert):
            # For its resends and later previews: an actual red or orange warning's (ahead of
            # any other, ``_gate``). Others are rendered when previewed: fifty county alerts
            # a second rendered at dispatch, one after another, took half again the engine's
            # CPU and a core of espeak-ng beside a province wave (bench/api_load.py).
            self._start(key, alert)
        if alert.recording is not None and (bare := self.library.get(alert.recording)):
            return bare.descriptor(self.base_url)
        log.info("audio.not_ready", key=key[:12], recording=alert.recording)
        return None

    # -- at preview: wait a while ----------------------------------------------------------

    async def render(self, alert: Spoken, *, wait: float | None = None) -> dict[str, Any] | None:
        """The announcement's descriptor, rendering it if need be; None when that takes more
        than ``wait`` seconds (it goes on in the background) or fails (logged)."""
        key = self.key(alert)
        found = self.library.rendered(key)
        if found is not None:
            return found.descriptor(self.base_url)
        task = self._start(key, alert)
        try:
            async with asyncio.timeout(self.settings.preview_wait if wait is None else wait):
                made = await asyncio.shield(task)
        except TimeoutError:
            log.info("audio.preview_waited", key=key[:12])
            return None
        except Exception as exc:
            log.info("audio.preview_without", key=key[:12], error=str(exc))
            return None
        return made.descriptor(self.base_url)

    def _start(self, key: str, alert: Spoken) -> asyncio.Task[AudioFile]:
        running = self._running.get(key)
        if running is not None:
            return running
        make: Callable[[], Awaitable[AudioFile]]
        if alert.recording is not None:
            make = functools.partial(self._build_recording, key, alert.recording, alert.repeat)
        else:
            make = functools.partial(self._speak, key, script(alert), alert.repeat)
        task = asyncio.create_task(
            self._gated(make, 0 if _urgent(alert) else 1), name=f"audio-render-{key[:12]}"
        )
        self._running[key] = task
        task.add_done_callback(functools.partial(self._done, key))
        return task

    async def _gated(self, make: Callable[[], Awaitable[AudioFile]], priority: int) -> AudioFile:
        async with self._gate.hold(priority):
            return await make()

    def _done(self, key: str, task: asyncio.Task[AudioFile]) -> None:
        self._running.pop(key, None)
        if task.cancelled():
            return
        if (error := task.exception()) is not None:
            log.warning("audio.render_failed", key=key[:12], error=str(error))

    async def _speak(self, key: str, words: str, repeat: int) -> AudioFile:
        if (found := self.library.rendered(key)) is not None:
            return found
        s = self.settings
        voice = s.voice if _CJK.search(words) else s.english_voice
        speech = await speak(
            words, voice=voice, rate=s.speed, binary=s.espeak, timeout=s.render_timeout
        )
        made = await asyncio.to_thread(self._store, key, speech, repeat)
        log.info("audio.rendered", key=key[:12], sha256=made.sha256, seconds=made.duration)
        return made

    async def _build_recording(self, key: str, sha256: str, repeat: int) -> AudioFile:
        if (found := self.library.rendered(key)) is not None:
            return found
        data = await asyncio.to_thread(self.library.path(sha256).read_bytes)
        made = await asyncio.to_thread(self._store, key, read_wav(data), repeat)
        log.info("audio.built", key=key[:12], recording=sha256, sha256=made.sha256)
        return made

    def _store(self, key: str, body: Pcm, repeat: int) -> AudioFile:
        whole = _repeated(body, 1.5, repeat, self.settings.max_announcement_seconds)
        made = self.library.put(
            wav_bytes(whole), duration=whole.seconds, kind="announcement", key=key
        )
        self.renders += 1
        return made

    # -- recordings ------------------------------------------------------------------------

    @property
    def max_upload_bytes(self) -> int:
        return self.settings.max_upload_bytes

    def has_recording(self, sha256: str) -> bool:
        found = self.library.get(sha256)
        return found is not None and found.kind == "recording"

    async def preview(self, req: Spoken) -> dict[str, Any] | None:
        return await self.render(req)

    async def upload(self, data: bytes, content_type: str) -> dict[str, Any]:
        """Check and store an office's recording; its descriptor."""
        if content_type in UNCHECKED_TYPES:
            raise UnsupportedMediaType(
                f"{content_type} cannot be checked on this engine (no MP3/Ogg decoder is "
                "installed), so it is not taken: send PCM WAV (Content-Type: audio/wav), "
                "e.g. `ffmpeg -i message.mp3 -ac 1 -ar 22050 message.wav`"
            )
        if content_type not in WAV_TYPES:
            raise UnsupportedMediaType(
                f"send the recording as Content-Type: audio/wav (PCM WAV); got "
                f"{content_type or 'none'!r}"
            )
        if len(data) > self.settings.max_upload_bytes:
            raise PayloadTooLarge(
                f"the recording is over {self.settings.max_upload_bytes} bytes; shorten it or "
                "send it mono at a lower rate"
            )
        pcm = await asyncio.to_thread(read_wav, data)
        limit = self.settings.max_recording_seconds
        if pcm.seconds > limit:
            raise ValidationFailed(
                f"the recording lasts {pcm.seconds:.1f} s, over the {limit:g} s allowed; "
                "shorten it",
                details=[{"field": "body", "message": "too long"}],
            )
        # Stored as a clean PCM WAV (the header rewritten, anything after the data dropped).
        stored = await asyncio.to_thread(
            self.library.put, wav_bytes(pcm), duration=pcm.seconds, kind="recording"
        )
        log.info("audio.recording_stored", sha256=stored.sha256, seconds=round(pcm.seconds, 1))
        return stored.descriptor(self.base_url)

    # -- serving ---------------------------------------------------------------------------

    def file_for(self, name: str) -> tuple[Path, str, str] | None:
        """(path, content type, sha256) of a served name like ``<sha256>.wav``; None for any
        other name or an unknown file."""
        match = FILE_NAME.fullmatch(name)
        if match is None or self.library.get(match[1]) is None:
            return None
        return self.library.path(match[1]), CONTENT_TYPE, match[1]

    async def close(self) -> None:
        """Stop the renders in progress (a half-written file is never renamed into place)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
