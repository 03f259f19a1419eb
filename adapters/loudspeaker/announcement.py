"""An alert as the loudspeaker says it: rendered once, stored by its hash, never waited for.

The announcement is the attention chime, then the words (``[演练：]<colour>预警。headline。text。
instruction。``, as terminals say them), the pair repeated as the alert asks, in one WAV file;
or, when the office named an uploaded recording, the chime and that recording repeated.

Files live in ``state_dir/audio``, named by their SHA-256 (``<sha256>.wav``) with a small
``<sha256>.json`` beside each (codec, duration, kind), written atomically (temporary file,
then rename). ``renders/<key>`` remembers which file an announcement came out as, where the
key is the SHA-256 of everything that shapes the sound (script, voice, speed, repeats), so the
same content is rendered once however often it is previewed, issued or resent.

Accessibility (docs/audio.md): ``[[audio.regions]]`` entries give a region (and everything
below it) a slower speed, extra repeats or another espeak-ng voice. Every entry that meets an
alert's areas gets a variant of the announcement, rendered, stored and found like the main one;
the payload lists them as ``audio_regions`` and a terminal plays the one of the longest code
that prefixes its own region. An alert's ``speech_text``, when set, is said instead of its text
and instruction (the loudspeaker's words, the SMS keeping its own).

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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from pydantic import Field, field_validator

from adapters.loudspeaker.tts import (
    Pcm,
    PcmFormat,
    chime,
    concat,
    installed_voices,
    read_wav,
    silence,
    speak,
)
from adapters.loudspeaker.tts import write_wav as wav_bytes
from dispatcher.core.config import Section
from dispatcher.core.errors import (
    ConfigError,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from dispatcher.core.gate import PriorityGate
from dispatcher.core.models import MsgType, Severity, Status, well_formed_region
from dispatcher.core.regions import RegionTree

log = structlog.get_logger(__name__)

# Bump when the chime or the layout of an announcement changes: old renders are not reused.
LAYOUT_VERSION = 1
CODEC, EXT, CONTENT_TYPE = "wav", "wav", "audio/wav"
MAX_REPEAT = 10
MAX_EXTRA_REPEATS = 5
# Each is a few hundred bytes in every payload of an alert whose areas it meets.
MAX_AUDIO_REGIONS = 100
# espeak-ng voices that exist but cannot read Chinese characters: ``hak`` reads only
# romanised Hakka (Pha̍k-fa-sṳ) and says "Chinese letter" for every character.
NO_HANZI_VOICES = frozenset({"hak"})
VOICE_PATTERN = r"^[A-Za-z0-9_+/-]{1,40}$"
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


class RegionAudio(Section):
    """One ``[[audio.regions]]`` entry: how the announcement sounds in ``code`` and below."""

    code: str
    # Words a minute (espeak-ng takes 80 to 450); unset: ``audio.speed``.
    speed: int | None = Field(default=None, ge=80, le=450)
    # Passes beyond the alert's ``repeat`` (many listeners are elderly).
    extra_repeats: int = Field(default=0, ge=0, le=MAX_EXTRA_REPEATS)
    # An installed espeak-ng voice (``espeak-ng --voices``), e.g. ``yue``; unset: ``audio.voice``.
    voice: str | None = Field(default=None, pattern=VOICE_PATTERN)

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        return well_formed_region(value)


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
    # An actual red or orange warning dispatched before its announcement was rendered has it
    # rendered this many seconds later, for its resends: not during the wave of acks of its
    # own dispatch (the render beside a 1,000-terminal alert made it 14 ms slower).
    dispatch_render_delay: float = Field(default=10.0, ge=0, le=600)
    # Uploaded recordings: at most this many bytes and seconds.
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=200 * 1024 * 1024)
    max_recording_seconds: float = Field(default=300.0, gt=0, le=3600)
    # Repeats stop before a whole announcement passes this length (one pass always plays).
    max_announcement_seconds: float = Field(default=900.0, gt=0, le=7200)
    # ``[[audio.regions]]``: slower speech, extra repeats or a dialect voice per region.
    regions: list[RegionAudio] = Field(default=[], max_length=MAX_AUDIO_REGIONS)

    @field_validator("regions")
    @classmethod
    def _unique(cls, value: list[RegionAudio]) -> list[RegionAudio]:
        codes = [entry.code for entry in value]
        twice = sorted({code for code in codes if codes.count(code) > 1})
        if twice:
            raise ValueError(f"region codes {twice} appear more than once; keep one entry each")
        return value

    def region_for(self, code: str) -> RegionAudio | None:
        """The entry of the longest code that prefixes ``code`` (a terminal's region)."""
        found = [entry for entry in self.regions if code.startswith(entry.code)]
        return max(found, key=lambda entry: len(entry.code), default=None)

    def regions_meeting(self, areas: Sequence[str]) -> list[RegionAudio]:
        """The entries that lie within ``areas`` or contain part of one: those whose
        terminals an alert to ``areas`` may reach."""
        return [
            entry
            for entry in self.regions
            if any(entry.code.startswith(a) or a.startswith(entry.code) for a in areas)
        ]


def check_regions(settings: AudioSettings, tree: RegionTree | None) -> None:
    """At start: every ``[[audio.regions]]`` code is in the region tree and every voice is an
    installed espeak-ng voice that can read Chinese; ConfigError naming the key otherwise.
    Without espeak-ng the voices cannot be checked (nothing is rendered then: logged)."""
    for index, entry in enumerate(settings.regions):
        if tree is not None and entry.code not in tree:
            raise ConfigError(
                f"region {entry.code} is not in the region tree; give a code of the region file",
                field=f"audio.regions[{index}].code",
            )
    wanted = [(i, e.voice) for i, e in enumerate(settings.regions) if e.voice is not None]
    if not wanted:
        return
    voices = installed_voices(settings.espeak)
    if voices is None:
        log.warning(
            "audio.voices_unchecked",
            espeak=settings.espeak,
            message="espeak-ng is not installed: the regions' voices cannot be checked",
        )
        return
    for index, voice in wanted:
        base = voice.split("+", 1)[0]
        if base not in voices:
            near = sorted(v for v in voices if v[:2] == base[:2] and "/" not in v)[:8]
            raise ConfigError(
                f"voice {voice!r} is not an installed espeak-ng voice (`{settings.espeak} "
                f"--voices` lists them{'; near it: ' + ', '.join(near) if near else ''})",
                field=f"audio.regions[{index}].voice",
            )
        if base.rsplit("/", 1)[-1] in NO_HANZI_VOICES:
            raise ConfigError(
                f"voice {voice!r} cannot read Chinese characters (espeak-ng's Hakka voice "
                "takes only romanised Hakka and says 'Chinese letter' for each character); "
                "leave voice unset for Mandarin",
                field=f"audio.regions[{index}].voice",
            )


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
    @property
    def areas(self) -> list[str]: ...
    @property
    def speech_text(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Sound:
    """How an announcement is voiced: the defaults, or a region's (``RegionAudio``)."""

    speed: int
    voice: str | None  # None: ``audio.voice`` (or ``english_voice`` for English words)
    extra_repeats: int = 0


def _urgent(alert: Spoken) -> bool:
    """An actual red or orange warning (``dispatcher.core.models.Alert.urgent``)."""
    return alert.status is Status.ACTUAL and alert.severity in (Severity.RED, Severity.ORANGE)


def script(alert: Spoken) -> str:
    """The words, as the reference terminal says them (``receiver.brain.render_announcement``):
    ``[演练：]<colour>预警。headline。text。instruction。``; a cancel
    ``【解除】headline，现已解除。``. With ``speech_text``, that is said instead of the text and
    the instruction (the terminal's local speech does the same)."""
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
        if alert.speech_text:
            parts = [colour, alert.headline, alert.speech_text]
        else:
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


def _repeated(body: Pcm, pause: float, repeat: int, limit: float, most: int = MAX_REPEAT) -> Pcm:
    """Chime, body and pause, as many times as asked (``most`` at most) while the whole stays
    within ``limit`` seconds (once at least)."""
    one = concat([_chime(body.fmt), body, silence(body.fmt, pause)])
    times = max(1, min(repeat, most, int(limit // max(one.seconds, 0.001))))
    return Pcm(body.fmt, one.frames * times)


class Announcer:
    """Renders, stores and finds announcements; takes recordings (see the module docstring).

    ``tree``: the region tree ``[[audio.regions]]`` codes are checked against at start."""

    def __init__(
        self,
        settings: AudioSettings,
        folder: Path,
        base_url: str,
        *,
        tree: RegionTree | None = None,
    ) -> None:
        check_regions(settings, tree)
        self.settings = settings
        self.library = AudioLibrary(folder)
        self.base_url = base_url
        self.renders = 0  # renders actually made (not found), for tests and logs
        self._running: dict[str, asyncio.Task[AudioFile]] = {}
        # Two CPUs are shared with dispatch: one render at a time, actual red and orange
        # warnings' first (issue 15: every queue serves them before the others).
        self._gate = PriorityGate()

    # -- keys ------------------------------------------------------------------------------

    def sound(self, entry: RegionAudio | None = None) -> Sound:
        """The voicing of the default announcement, or of ``entry``'s variant."""
        if entry is None:
            return Sound(self.settings.speed, None)
        return Sound(entry.speed or self.settings.speed, entry.voice, entry.extra_repeats)

    def _voice(self, words: str, sound: Sound) -> str:
        if not _CJK.search(words):
            return self.settings.english_voice
        return sound.voice or self.settings.voice

    @staticmethod
    def _times(alert: Spoken, sound: Sound) -> int:
        return min(max(alert.repeat, 1), MAX_REPEAT) + sound.extra_repeats

    def key(self, alert: Spoken, sound: Sound | None = None) -> str:
        """What the sound of ``alert`` (voiced as ``sound``, else the default) depends on,
        hashed. A region's variant with the default's settings has the default's key."""
        s = self.settings
        sound = sound or self.sound()
        shape: dict[str, object] = {
            "layout": LAYOUT_VERSION,
            "repeat": self._times(alert, sound),
            "limit": s.max_announcement_seconds,
        }
        if alert.recording is not None:
            shape |= {"recording": alert.recording}
        else:
            words = script(alert)
            shape |= {"script": words, "voice": self._voice(words, sound), "speed": sound.speed}
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
            self._start_later(key, alert, self.sound())
        if alert.recording is not None and (bare := self.library.get(alert.recording)):
            return bare.descriptor(self.base_url)
        log.info("audio.not_ready", key=key[:12], recording=alert.recording)
        return None

    def regional(self, alert: Spoken) -> list[dict[str, Any]]:
        """The payload's ``audio_regions``: one entry per ``[[audio.regions]]`` entry that
        meets the alert's areas, ``{code, speed, repeat}`` (what a terminal's own speech
        should use) and, when its variant is rendered, ``url, sha256, duration, codec``.
        Never waits: a variant not rendered yet is started for an actual red or orange
        warning (after its default announcement), like ``descriptor``."""
        if alert.msg_type is MsgType.CANCEL and not alert.headline:
            return []
        entries = []
        for entry in self.settings.regions_meeting(alert.areas):
            sound = self.sound(entry)
            described: dict[str, Any] = {
                "code": entry.code,
                "speed": sound.speed,
                "repeat": self._times(alert, sound),
            }
            key = self.key(alert, sound)
            found = self.library.rendered(key)
            if found is not None:
                described |= found.descriptor(self.base_url)
            elif _urgent(alert):
                self._start_later(key, alert, sound)
            entries.append(described)
        return entries

    # -- at preview: wait a while ----------------------------------------------------------

    async def render(
        self, alert: Spoken, *, wait: float | None = None, sound: Sound | None = None
    ) -> dict[str, Any] | None:
        """The announcement's descriptor (voiced as ``sound``, else the default), rendering
        it if need be; None when that takes more than ``wait`` seconds (it goes on in the
        background) or fails (logged)."""
        sound = sound or self.sound()
        key = self.key(alert, sound)
        found = self.library.rendered(key)
        if found is not None:
            return found.descriptor(self.base_url)
        task = self._start(key, alert, sound)
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

    def _start_later(self, key: str, alert: Spoken, sound: Sound) -> None:
        """``_start`` once ``dispatch_render_delay`` has passed: not beside the wave of acks
        the alert it is for is bringing in."""
        delay = self.settings.dispatch_render_delay
        if delay <= 0:
            self._start(key, alert, sound)
        else:
            asyncio.get_running_loop().call_later(delay, self._start, key, alert, sound)

    def _start(self, key: str, alert: Spoken, sound: Sound) -> asyncio.Task[AudioFile]:
        running = self._running.get(key)
        if running is not None:
            return running
        make: Callable[[], Awaitable[AudioFile]]
        times = self._times(alert, sound)
        if alert.recording is not None:
            make = functools.partial(self._build_recording, key, alert.recording, times)
        else:
            make = functools.partial(self._speak, key, script(alert), times, sound)
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

    async def _speak(self, key: str, words: str, repeat: int, sound: Sound) -> AudioFile:
        if (found := self.library.rendered(key)) is not None:
            return found
        s = self.settings
        speech = await speak(
            words,
            voice=self._voice(words, sound),
            rate=sound.speed,
            binary=s.espeak,
            timeout=s.render_timeout,
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
        whole = _repeated(
            body,
            1.5,
            repeat,
            self.settings.max_announcement_seconds,
            MAX_REPEAT + MAX_EXTRA_REPEATS,
        )
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
        """The default announcement's descriptor; with ``[[audio.regions]]`` entries that
        meet the alert's areas, also ``regions``: their variants, each as in the payload's
        ``audio_regions``, rendered now (within the same wait) so the send finds them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.preview_wait
        main = await self.render(req)
        entries = self.settings.regions_meeting(req.areas)
        if not entries or main is None:
            return main
        regions = []
        for entry in entries:
            sound = self.sound(entry)
            # One wait for them all: what is not ready by then goes on in the background.
            made = await self.render(req, sound=sound, wait=max(0.0, deadline - loop.time()))
            regions.append(
                {"code": entry.code, "speed": sound.speed, "repeat": self._times(req, sound)}
                | (made or {})
            )
        return main | {"regions": regions}

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
