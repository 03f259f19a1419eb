"""Sound for the loudspeakers: PCM WAV in and out, the attention chime, and espeak-ng's voice.

Everything here is 16-bit-or-other linear PCM held as bytes, in the standard library's
``wave`` and ``array``: no codec, no file to ship. ``speak`` is the one place the engine runs
the ``espeak-ng`` binary (no shell, the text after ``--``, a deadline); ``read_wav`` is the one
place an office's uploaded recording is checked (PCM only, a sane rate and channel count, the
length its header claims really there).
"""

from __future__ import annotations

import array
import asyncio
import io
import math
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

from dispatcher.core.errors import ServiceError, ValidationFailed
from dispatcher.core.mandarin import espeak_input

# What espeak-ng writes: mono, 16-bit, 22,050 Hz. Rendered announcements keep it.
SPEECH_RATE = 22_050
RATES = range(8_000, 48_001)
WIDTHS = (1, 2, 3, 4)


class SpeechUnavailable(ServiceError, code="tts_unavailable"):
    """espeak-ng is not installed, failed, or took too long."""


@dataclass(frozen=True, slots=True)
class PcmFormat:
    rate: int = SPEECH_RATE
    channels: int = 1
    width: int = 2  # bytes per sample

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.width


@dataclass(frozen=True, slots=True)
class Pcm:
    """Sound as raw little-endian PCM frames in ``fmt``."""

    fmt: PcmFormat
    frames: bytes

    @property
    def seconds(self) -> float:
        return len(self.frames) / (self.fmt.frame_bytes * self.fmt.rate)


def _encode(samples: list[float], fmt: PcmFormat) -> bytes:
    """Mono samples in [-1, 1] as PCM frames of ``fmt`` (each channel the same)."""
    peak = (1 << (8 * fmt.width - 1)) - 1
    ints = [round(max(-1.0, min(1.0, s)) * peak) for s in samples]
    if fmt.width == 1:  # 8-bit WAV is unsigned
        mono = bytes(i + 128 for i in ints)
    elif fmt.width == 3:
        mono = b"".join(i.to_bytes(3, "little", signed=True) for i in ints)
    else:
        packed = array.array("h" if fmt.width == 2 else "i", ints)
        if sys.byteorder == "big":
            packed.byteswap()
        mono = packed.tobytes()
    if fmt.channels == 1:
        return mono
    w = fmt.width
    return b"".join(mono[i : i + w] * fmt.channels for i in range(0, len(mono), w))


def chime(fmt: PcmFormat = PcmFormat(), seconds: float = 2.5) -> Pcm:
    """The attention signal: a two-tone (880 Hz / 660 Hz) alternation, a quarter second each,
    with short fades so no tone clicks, then half a second of silence before the words: 3 s."""
    tone_len, fade = 0.25, 0.01
    samples: list[float] = []
    rate = fmt.rate
    for n in range(round(seconds / tone_len)):
        freq = 880.0 if n % 2 == 0 else 660.0
        count = int(tone_len * rate)
        ramp = max(1, int(fade * rate))
        for i in range(count):
            gain = min(1.0, i / ramp, (count - i) / ramp) * 0.6
            samples.append(gain * math.sin(2 * math.pi * freq * i / rate))
    samples.extend([0.0] * int(0.5 * rate))
    return Pcm(fmt, _encode(samples, fmt))


def silence(fmt: PcmFormat, seconds: float) -> Pcm:
    zero = b"\x80" if fmt.width == 1 else b"\x00" * fmt.width
    return Pcm(fmt, zero * fmt.channels * int(seconds * fmt.rate))


def concat(parts: list[Pcm]) -> Pcm:
    formats = {part.fmt for part in parts}
    if len(formats) != 1:
        raise ValueError(f"cannot join sound of different formats: {sorted(map(str, formats))}")
    return Pcm(parts[0].fmt, b"".join(part.frames for part in parts))


def write_wav(pcm: Pcm) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(pcm.fmt.channels)
        w.setsampwidth(pcm.fmt.width)
        w.setframerate(pcm.fmt.rate)
        w.writeframes(pcm.frames)
    return out.getvalue()


def read_wav(data: bytes, *, what: str = "the recording") -> Pcm:
    """``data`` as PCM, or ValidationFailed saying what is wrong with it: not a WAV file, not
    linear PCM (compressed or floating point), an odd rate, channel count or sample size, or
    fewer frames than its header claims."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValidationFailed(
            f"{what} is not a WAV file (no RIFF/WAVE header); send PCM WAV audio",
            details=[{"field": "body", "message": "not a WAV file"}],
        )
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            fmt = PcmFormat(w.getframerate(), w.getnchannels(), w.getsampwidth())
            claimed = w.getnframes()
            frames = w.readframes(claimed)
    except (wave.Error, EOFError) as exc:
        reason = str(exc)
        if "unknown format" in reason:
            reason = f"not linear PCM ({reason}); convert it to 16-bit PCM WAV"
        raise ValidationFailed(
            f"{what} is not a readable PCM WAV file: {reason}",
            details=[{"field": "body", "message": reason}],
        ) from None
    problems = []
    if fmt.rate not in RATES:
        problems.append(f"a sample rate of {fmt.rate} Hz (8,000 to 48,000 are taken)")
    if fmt.channels not in (1, 2):
        problems.append(f"{fmt.channels} channels (mono or stereo are taken)")
    if fmt.width not in WIDTHS:
        problems.append(f"{fmt.width * 8}-bit samples (8 to 32 bits are taken)")
    if problems:
        raise ValidationFailed(
            f"{what} has {' and '.join(problems)}",
            details=[{"field": "body", "message": p} for p in problems],
        )
    whole = len(frames) // fmt.frame_bytes
    if whole == 0 or whole < claimed:
        raise ValidationFailed(
            f"{what} is cut short: its header claims {claimed} frames, it holds {whole}",
            details=[{"field": "body", "message": "truncated"}],
        )
    return Pcm(fmt, frames[: whole * fmt.frame_bytes])


RENDER_NICENESS = 10


def installed_voices(binary: str = "espeak-ng") -> frozenset[str] | None:
    """The names ``-v`` takes (each voice's language, file and file's last part, e.g.
    ``yue``, ``sit/yue``), from ``espeak-ng --voices``; None when the binary is missing or
    fails. Run once at start (a few milliseconds), so a wrong voice stops the engine there
    rather than silencing a region's announcements later."""
    if shutil.which(binary) is None:
        return None
    try:
        listed = subprocess.run(  # noqa: S603  a fixed argument list, no shell
            [binary, "--voices"], capture_output=True, timeout=10, check=True
        ).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return None
    names: set[str] = set()
    for line in listed.splitlines()[1:]:
        # Pty Language Age/Gender VoiceName File Other-languages (names have no spaces).
        fields = line.split()
        if len(fields) >= 5:
            names |= {fields[1], fields[4], fields[4].rsplit("/", 1)[-1]}
    return frozenset(names)


async def speak(
    text: str, *, voice: str, rate: int, binary: str = "espeak-ng", timeout: float = 60.0
) -> Pcm:
    """``text`` spoken by espeak-ng (``voice``, ``rate`` words a minute), as PCM.

    SpeechUnavailable when the binary is missing, fails, writes no sound or outlasts
    ``timeout`` (it is killed then)."""
    if shutil.which(binary) is None:
        raise SpeechUnavailable(
            f"{binary} is not installed, so announcements cannot be rendered: "
            "`sudo apt-get install espeak-ng`; terminals speak the text themselves meanwhile"
        )
    # Chinese as tone-numbered pinyin: Debian's cmn voice misreads characters as English. In
    # a thread: the first call loads pypinyin's dictionaries (0.2 s), not on the event loop.
    voice, text = await asyncio.to_thread(espeak_input, text, voice)
    with tempfile.TemporaryDirectory(prefix="ebd-tts-") as folder:
        out = Path(folder) / "speech.wav"
        # Niced: a render is background work and must not take a core from dispatch and
        # ack ingestion while a warning goes out.
        nice = ["nice", "-n", str(RENDER_NICENESS)] if shutil.which("nice") else []
        process = await asyncio.create_subprocess_exec(
            *nice,
            binary,
            "-v",
            voice,
            "-s",
            str(rate),
            "-w",
            str(out),
            "--",
            text,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(timeout):
                _, stderr = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise SpeechUnavailable(f"{binary} took longer than {timeout:g} s") from None
        except asyncio.CancelledError:
            process.kill()
            await process.wait()
            raise
        if process.returncode != 0 or not out.exists():
            complaint = stderr.decode("utf-8", "replace").strip()[-200:]
            raise SpeechUnavailable(
                f"{binary} -v {voice} failed (exit {process.returncode}): "
                f"{complaint or 'no output'}"
            )
        data = await asyncio.to_thread(out.read_bytes)
    pcm = read_wav(data, what=f"{binary}'s output")
    if pcm.fmt.width != 2 or pcm.fmt.channels != 1:
        raise SpeechUnavailable(f"{binary} wrote {pcm.fmt}, expected mono 16-bit")
    return pcm
