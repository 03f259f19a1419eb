"""A terminal's recorded announcements: fetch the payload's audio, check its hash, play it;
speak the text instead whenever that fails.

Accessibility (docs/audio.md, docs/protocol.md): a payload may carry ``audio_regions``, the
announcement as some regions hear it (slower, repeated more, another voice), and
``speech_text``, the loudspeaker's own words. The terminal plays the variant whose ``code`` is
the longest prefix of its region, else ``audio``; its own speech, when it falls back, says
``speech_text`` (instead of text and instruction) at that entry's ``speed`` and ``repeat``.
The brain keeps neither field, so they are read here from the verified payload
(``payload_of``, given by the agent).

The payload was verified (its signature covers ``audio.sha256``) before anything here runs, so
the hash is trusted and the file's source is not: the download is bounded in time and size,
and a file whose SHA-256 differs is thrown away. The engine's file is the whole announcement,
chime and repeats included, so it plays once. A terminal whose amplifier takes files gets it
written to ``out_file``; otherwise ``aplay`` (alsa-utils) sounds it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
import structlog

from receiver.brain import Play

log = structlog.get_logger(__name__)

# An announcement of 15 minutes is about 40 MB as 22 kHz 16-bit mono WAV.
MAX_AUDIO_BYTES = 64 * 1024 * 1024
# The alert's own repeat (10 at most) and a region's extra repeats (5 at most).
MAX_SPOKEN_REPEAT = 15
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_CODE = re.compile(r"^[0-9]{2,12}$")
# An alert's verified payload (JSON bytes) by its id; None if the terminal has none.
PayloadLookup = Callable[[str], bytes | None]


@dataclass(frozen=True, slots=True)
class RegionalAudio:
    """One ``audio_regions`` entry: how the announcement sounds in ``code`` and below."""

    code: str
    speed: int | None = None  # words a minute for the terminal's own speech
    repeat: int | None = None  # passes, the region's extra ones included
    url: str | None = None  # the variant's file, when the engine had it rendered
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Accessibility:
    """What the payload says beyond the brain's ``Alert``: the loudspeaker's own words and the
    regions' variants."""

    speech_text: str | None = None
    regions: tuple[RegionalAudio, ...] = ()

    def for_region(self, region: str) -> RegionalAudio | None:
        """The entry of the longest code that prefixes ``region``."""
        found = [entry for entry in self.regions if region.startswith(entry.code)]
        return max(found, key=lambda entry: len(entry.code), default=None)


def accessibility(payload: bytes | None) -> Accessibility:
    """``speech_text`` and ``audio_regions`` of a verified payload; entries that are not well
    formed are skipped (logged), never a reason to stay silent."""
    if payload is None:
        return Accessibility()
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Accessibility()
    if not isinstance(body, dict):
        return Accessibility()
    spoken = body.get("speech_text")
    entries: list[RegionalAudio] = []
    listed = body.get("audio_regions")
    for item in listed if isinstance(listed, list) else []:
        entry = _regional(item)
        if entry is None:
            log.warning("receiver.audio_region_skipped", entry=str(item)[:200])
        else:
            entries.append(entry)
    return Accessibility(
        spoken if isinstance(spoken, str) and spoken.strip() else None, tuple(entries)
    )


def _regional(item: object) -> RegionalAudio | None:
    if not isinstance(item, dict) or not isinstance(item.get("code"), str):
        return None
    if not _CODE.fullmatch(item["code"]):
        return None
    speed, repeat, url, sha256 = (item.get(k) for k in ("speed", "repeat", "url", "sha256"))
    if speed is not None and (type(speed) is not int or not 80 <= speed <= 450):
        return None
    if repeat is not None and (type(repeat) is not int or repeat < 1):
        return None
    audio = isinstance(url, str) and isinstance(sha256, str) and _SHA256.fullmatch(sha256)
    return RegionalAudio(
        item["code"],
        speed,
        None if repeat is None else min(repeat, MAX_SPOKEN_REPEAT),
        url if audio else None,
        sha256.lower() if audio and isinstance(sha256, str) else None,
    )


@dataclass(frozen=True, slots=True)
class SpokenPlay(Play):
    """A ``Play`` as the terminal's own speech should say it: the alert with ``speech_text``
    in place of text and instruction and the region's repeat, and the region's ``speed``
    (words a minute, None: the speaker's own). ``text`` renders as for any alert."""

    speed: int | None = None


def spoken(item: Play, extra: Accessibility, entry: RegionalAudio | None) -> Play:
    """``item`` adjusted for speaking (``SpokenPlay``); ``item`` itself when nothing differs."""
    alert = item.alert
    if extra.speech_text and alert.msg_type != "cancel":
        alert = dataclasses.replace(alert, text=extra.speech_text, instruction=None)
    if entry is not None and entry.repeat is not None:
        alert = dataclasses.replace(alert, repeat=entry.repeat)
    speed = entry.speed if entry is not None else None
    if alert is item.alert and speed is None:
        return item
    return SpokenPlay(alert, speed)


class Speaker(Protocol):
    """A player of ``receiver.agent`` (espeak-ng, the log): says ``item.text``."""

    async def play(self, item: Play) -> None: ...


class AudioUnavailable(Exception):
    """The announcement's audio could not be fetched, or is not the one the payload names."""


class AudioPlayer:
    """Plays an alert's audio when it carries one, else (or when that fails) ``speech``.

    ``speech`` is any player of ``receiver.agent`` (espeak-ng, the log); its ``play`` is
    awaited for alerts without usable audio. ``command`` sounds a WAV file (its path is
    appended); ``out_file`` replaces it by writing the verified file there. ``region`` and
    ``payload_of`` (``serve``) let it choose a region's variant and say ``speech_text``."""

    def __init__(
        self,
        speech: Speaker,
        *,
        out_file: Path | None = None,
        command: Sequence[str] = ("aplay", "-q"),
        timeout: float = 30.0,
        max_bytes: int = MAX_AUDIO_BYTES,
    ) -> None:
        self.speech = speech
        self.out_file = out_file
        self.command = tuple(command)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.played_audio: list[str] = []  # sha256 of each file sounded, newest last
        self.region: str | None = None
        self.payload_of: PayloadLookup | None = None

    def serve(self, region: str, payload_of: PayloadLookup) -> None:
        """The terminal this player sounds for: its region (which variant it plays) and where
        the verified payload of an alert is (the fields the brain does not keep)."""
        self.region = region
        self.payload_of = payload_of

    async def play(self, item: Play) -> None:
        extra = Accessibility()
        if self.payload_of is not None:
            try:
                extra = accessibility(self.payload_of(item.alert_id))
            # The extras must never silence a warning: speak or play the default then.
            except Exception as exc:
                log.warning("receiver.accessibility_unread", alert_id=item.alert_id, error=str(exc))
        entry = extra.for_region(self.region) if self.region is not None else None
        audio: tuple[str, str] | None = None
        if entry is not None and entry.url is not None and entry.sha256 is not None:
            audio = (entry.url, entry.sha256)
        elif item.alert.audio is not None:
            audio = (item.alert.audio.url, item.alert.audio.sha256)
        if audio is not None:
            url, sha256 = audio
            try:
                data = await fetch(url, sha256, self.timeout, self.max_bytes)
                await self._sound(data)
                self.played_audio.append(sha256)
                log.info(
                    "receiver.audio_played",
                    alert_id=item.alert_id,
                    sha256=sha256,
                    region=entry.code if entry is not None and entry.url else None,
                )
                return
            except AudioUnavailable as exc:
                log.warning(
                    "receiver.audio_fallback",
                    alert_id=item.alert_id,
                    reason=str(exc),
                    message="speaking the text instead",
                )
        await self.speech.play(spoken(item, extra, entry))

    async def _sound(self, data: bytes) -> None:
        if self.out_file is not None:
            await asyncio.to_thread(_write, self.out_file, data)
            return
        if shutil.which(self.command[0]) is None:
            raise AudioUnavailable(f"{self.command[0]} is not installed to play audio files")
        with tempfile.TemporaryDirectory(prefix="ebd-audio-") as folder:
            path = Path(folder) / "announcement.wav"
            await asyncio.to_thread(path.write_bytes, data)
            process = await asyncio.create_subprocess_exec(
                *self.command,
                str(path),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                _, stderr = await process.communicate()
            except asyncio.CancelledError:
                process.kill()
                await process.wait()
                raise
            if process.returncode != 0:
                reason = stderr.decode("utf-8", "replace").strip()[-150:]
                raise AudioUnavailable(f"{self.command[0]} failed: {reason}")


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


async def fetch(url: str, sha256: str, timeout: float, max_bytes: int) -> bytes:
    """The file at ``url`` if its SHA-256 is ``sha256``; AudioUnavailable saying why not."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise AudioUnavailable(f"audio url {url[:100]!r} is not http(s)")
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    size = 0
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url) as response,
        ):
            if response.status != 200:
                raise AudioUnavailable(f"GET {url} answered {response.status}")
            async for chunk in response.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise AudioUnavailable(f"audio at {url} is over {max_bytes} bytes")
                digest.update(chunk)
                chunks.append(chunk)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise AudioUnavailable(f"cannot fetch {url}: {exc or type(exc).__name__}") from exc
    if digest.hexdigest() != sha256:
        raise AudioUnavailable(
            f"audio at {url} has sha256 {digest.hexdigest()}, not the signed {sha256}; discarded"
        )
    return b"".join(chunks)
