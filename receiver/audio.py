"""A terminal's recorded announcements: fetch the payload's audio, check its hash, play it;
speak the text instead whenever that fails.

The payload was verified (its signature covers ``audio.sha256``) before anything here runs, so
the hash is trusted and the file's source is not: the download is bounded in time and size,
and a file whose SHA-256 differs is thrown away. The engine's file is the whole announcement,
chime and repeats included, so it plays once. A terminal whose amplifier takes files gets it
written to ``out_file``; otherwise ``aplay`` (alsa-utils) sounds it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
import structlog

from receiver.brain import Play

log = structlog.get_logger(__name__)

# An announcement of 15 minutes is about 40 MB as 22 kHz 16-bit mono WAV.
MAX_AUDIO_BYTES = 64 * 1024 * 1024


class Speaker(Protocol):
    """A player of ``receiver.agent`` (espeak-ng, the log): says ``item.text``."""

    async def play(self, item: Play) -> None: ...


class AudioUnavailable(Exception):
    """The announcement's audio could not be fetched, or is not the one the payload names."""


class AudioPlayer:
    """Plays an alert's audio when it carries one, else (or when that fails) ``speech``.

    ``speech`` is any player of ``receiver.agent`` (espeak-ng, the log); its ``play`` is
    awaited for alerts without usable audio. ``command`` sounds a WAV file (its path is
    appended); ``out_file`` replaces it by writing the verified file there."""

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

    async def play(self, item: Play) -> None:
        audio = item.alert.audio
        if audio is not None:
            try:
                data = await fetch(audio.url, audio.sha256, self.timeout, self.max_bytes)
                await self._sound(data)
                self.played_audio.append(audio.sha256)
                log.info("receiver.audio_played", alert_id=item.alert_id, sha256=audio.sha256)
                return
            except AudioUnavailable as exc:
                log.warning(
                    "receiver.audio_fallback",
                    alert_id=item.alert_id,
                    reason=str(exc),
                    message="speaking the text instead",
                )
        await self.speech.play(item)

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
