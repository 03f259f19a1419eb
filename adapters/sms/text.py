"""SMS text: what an alert says in a text message, and how many segments that costs.

Three pure functions, no I/O:

* ``segment`` decides the encoding (GSM-7 or UCS-2) of a text, counts its units and splits it
  into the segments a gateway bills and a handset reassembles.
* ``fit`` shortens the body of a text (never the signature and status marks before it) until
  it fits a segment cap, ending it with "…".
* ``compose`` builds the message of one alert: signature, exercise/test/update marks, then the
  office's headline, text and instruction, capped with ``fit``.

Segment counts matter beyond billing: a gateway refuses or silently truncates texts above its
cap, and a cut in the wrong place (inside an escape pair or a surrogate pair) shows up on the
handset as garbage. So the counting here follows GSM 03.38 / 3GPP TS 23.038 exactly rather
than approximating with ``len``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ELLIPSIS",
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "Encoding",
    "Segmentation",
    "SmsText",
    "compose",
    "fit",
    "segment",
]


class Encoding(StrEnum):
    GSM7 = "gsm7"
    UCS2 = "ucs2"


# The GSM 03.38 basic character set in code order, 16 per row, so each entry can be checked
# against the standard by position. 0x1B is ESC: it introduces the extension table and is not
# a character of its own, so it is listed here only to keep the positions right.
_ESC = "\x1b"
_GSM7_BASIC_ROWS = (
    "@£$¥èéùìòÇ\nØø\rÅå",
    "Δ_ΦΓΛΩΠΨΣΘΞ" + _ESC + "ÆæßÉ",
    " !\"#¤%&'()*+,-./",
    "0123456789:;<=>?",
    "¡ABCDEFGHIJKLMNO",
    "PQRSTUVWXYZÄÖÑÜ§",
    "¿abcdefghijklmno",
    "pqrstuvwxyzäöñüà",
)
GSM7_BASIC: frozenset[str] = frozenset("".join(_GSM7_BASIC_ROWS)) - {_ESC}
# The default extension table: each costs ESC + the character, 2 septets.
GSM7_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")

ELLIPSIS = "…"  # U+2026; not GSM-7, so any truncated text is UCS-2

_GSM7_SINGLE = 160
_GSM7_MULTI = 153  # 160 septets minus the 7 the concatenation header (UDH) takes
_UCS2_SINGLE = 70
_UCS2_MULTI = 67  # 140 octets minus the 6-octet UDH, as 2-octet units


@dataclass(frozen=True, slots=True)
class Segmentation:
    """How a text goes over the air.

    ``units`` are septets for GSM-7 (an extension character counts 2) and UTF-16 code units
    for UCS-2 (a character outside the BMP counts 2). ``per_segment`` is the unit budget each
    part was packed into: 160/70 for a single-segment text, 153/67 for a concatenated one.
    ``"".join(parts)`` is the text. The empty text is one empty GSM-7 segment of 0 units: a
    gateway still sends (and bills) one message for it.
    """

    encoding: Encoding
    units: int
    segments: int
    per_segment: int
    parts: tuple[str, ...]


def _gsm7_cost(ch: str) -> int:
    return 2 if ch in GSM7_EXTENSION else 1


def _ucs2_cost(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def _pack(text: str, cost: Callable[[str], int], budget: int) -> tuple[str, ...]:
    # Whole characters only: an escape pair or a surrogate pair is one character here, so it
    # moves to the next segment as a unit when only one unit is left in the current one.
    parts: list[str] = []
    start = 0
    used = 0
    for i, ch in enumerate(text):
        c = cost(ch)
        if used + c > budget:
            parts.append(text[start:i])
            start = i
            used = 0
        used += c
    parts.append(text[start:])
    return tuple(parts)


def segment(text: str) -> Segmentation:
    """Encoding, unit count and segments of ``text`` as an SMS (see ``Segmentation``)."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        encoding, cost, single, multi = Encoding.GSM7, _gsm7_cost, _GSM7_SINGLE, _GSM7_MULTI
    else:
        encoding, cost, single, multi = Encoding.UCS2, _ucs2_cost, _UCS2_SINGLE, _UCS2_MULTI
    units = sum(cost(ch) for ch in text)
    if units <= single:
        return Segmentation(encoding, units, 1, single, (text,))
    # Not ceil(units / multi): pairs pushed to the next segment can leave a unit unused.
    parts = _pack(text, cost, multi)
    return Segmentation(encoding, units, len(parts), multi, parts)


def _is_extender(ch: str) -> bool:
    """Whether ``ch`` belongs to the character before it on screen."""
    cp = ord(ch)
    return (
        unicodedata.category(ch).startswith("M")  # combining marks, variation selectors
        or cp == 0x200D  # zero-width joiner
        or 0x1F3FB <= cp <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= cp <= 0xE007F  # emoji tag sequences (subdivision flags)
    )


def _is_regional_indicator(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _cut_point(body: str, k: int) -> int:
    """The largest cut ``<= k`` that does not split what a reader sees as one character.

    Cutting a base letter from its accent, a ZWJ emoji sequence or a flag's two regional
    indicators would leave a stray glyph before the "…"; a shorter cut always fits too.
    """
    while 0 < k < len(body):
        if _is_extender(body[k]) or body[k - 1] == "\u200d":
            k -= 1
            continue
        if _is_regional_indicator(body[k]) and _is_regional_indicator(body[k - 1]):
            run = 0
            while run < k and _is_regional_indicator(body[k - 1 - run]):
                run += 1
            if run % 2:  # body[k - 1] opens a flag that body[k] closes
                k -= 1
                continue
        break
    return k


def fit(prefix: str, body: str, max_segments: int) -> tuple[str, bool]:
    """``prefix + body``, with the body cut and ended with "…" if it needs more segments.

    Returns the text and whether it was truncated. The prefix is never cut. The cut keeps the
    longest start of the body that still fits, under the encoding the result ends up with:
    the "…" makes a GSM-7 text UCS-2, whose segments hold less than half as much. Trailing
    whitespace before the "…" is dropped. Raises ``ValueError`` if ``max_segments < 1`` or if
    not even ``prefix + "…"`` fits.
    """
    if max_segments < 1:
        raise ValueError(f"max_segments must be at least 1, got {max_segments}")
    whole = prefix + body
    if segment(whole).segments <= max_segments:
        return whole, False

    def cut(k: int) -> str:
        return prefix + body[:k].rstrip() + ELLIPSIS

    if segment(cut(0)).segments > max_segments:
        raise ValueError(f"the prefix alone does not fit in {max_segments} segment(s): {prefix!r}")
    # Binary search is sound because the segment count of cut(k) never decreases with k:
    # body[:k].rstrip() only grows as k grows, the text is UCS-2 throughout (the ellipsis
    # sees to that), and greedy packing of a longer text needs at least as many segments.
    # k == len(body) is excluded: a body that fits uncut took the early return above.
    lo, hi = 0, len(body) - 1  # cut(lo) fits; find the largest k in [lo, hi] that does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if segment(cut(mid)).segments <= max_segments:
            lo = mid
        else:
            hi = mid - 1
    return cut(_cut_point(body, lo)), True


_STATUSES = ("actual", "exercise", "test")
_MSG_TYPES = ("alert", "update", "cancel")
_LANGS = ("zh", "en")

_STATUS_MARK = {
    "zh": {"actual": "", "exercise": "【演练】", "test": "【测试】"},
    "en": {"actual": "", "exercise": "[EXERCISE] ", "test": "[TEST] "},
}
# A cancel's headline already says so (…解除 / … lifted); repeating it wastes units.
_TYPE_MARK = {
    "zh": {"alert": "", "update": "更新：", "cancel": ""},
    "en": {"alert": "", "update": "Update: ", "cancel": ""},
}
_HEADLINE_SEP = {"zh": "：", "en": ": "}
_FULL_STOP = {"zh": "。", "en": "."}
_INSTRUCTION_SEP = {"zh": "", "en": " "}

_SENTENCE_END = frozenset("。！？…!?.")
# Closing quotes and brackets may follow the full stop: 请勿外出。” still ends a sentence.
_CLOSERS = "”’」』）》〉】)]\"'"


@dataclass(frozen=True, slots=True)
class SmsText:
    """One alert's SMS. ``text`` = signature part + ``body``.

    The signature part is ``【signature】`` for zh and ``[signature] `` for en; ``body`` is
    what an Aliyun-style template carries, the gateway adding the signature itself.
    """

    signature: str  # without brackets
    body: str
    text: str  # what the handset shows
    segmentation: Segmentation
    truncated: bool


def _clean(value: str | None) -> str:
    # Handsets show newlines and runs of spaces poorly, and each one costs a unit.
    return " ".join(value.split()) if value else ""


def _ends_sentence(value: str) -> bool:
    core = value.rstrip(_CLOSERS)
    return bool(core) and core[-1] in _SENTENCE_END


def compose(
    *,
    signature: str,
    headline: str,
    text: str,
    instruction: str | None,
    status: str,
    msg_type: str,
    lang: str = "zh",
    custom: str | None = None,
    max_segments: int = 6,
) -> SmsText:
    """The SMS of one alert, at most ``max_segments`` long.

    The body is the status mark (exercise/test), the update mark, then either ``custom`` (an
    office's own SMS text for this channel) or ``headline：text`` with ``instruction``
    appended, a full stop inserted between them when the text does not end a sentence. zh:
    ``【演练】更新：标题：正文。指引``; en: ``[EXERCISE] Update: Headline: Text. Instruction``.
    Whitespace runs in the office's texts become single spaces. Only the part after the marks
    may be cut (see ``fit``), so a truncated exercise is still visibly an exercise.

    Raises ``ValueError`` for an unknown status, message type or language, an empty
    signature, nothing to say, or a signature and marks that do not fit by themselves.
    """
    if status not in _STATUSES:
        raise ValueError(f"unknown status {status!r}, expected one of {_STATUSES}")
    if msg_type not in _MSG_TYPES:
        raise ValueError(f"unknown message type {msg_type!r}, expected one of {_MSG_TYPES}")
    if lang not in _LANGS:
        raise ValueError(f"unknown language {lang!r}, expected one of {_LANGS}")
    sig = _clean(signature)
    if not sig:
        raise ValueError("an SMS needs a signature")

    content = _clean(custom)
    if not content:
        lead = _HEADLINE_SEP[lang].join(p for p in (_clean(headline), _clean(text)) if p)
        advice = _clean(instruction)
        if lead and advice:
            stop = "" if _ends_sentence(lead) else _FULL_STOP[lang]
            content = lead + stop + _INSTRUCTION_SEP[lang] + advice
        else:
            content = lead or advice
    if not content:
        raise ValueError("an SMS needs a custom text, a headline, a text or an instruction")

    sig_part = f"【{sig}】" if lang == "zh" else f"[{sig}] "
    marks = _STATUS_MARK[lang][status] + _TYPE_MARK[lang][msg_type]
    full, truncated = fit(sig_part + marks, content, max_segments)
    return SmsText(
        signature=sig,
        body=full[len(sig_part) :],
        text=full,
        segmentation=segment(full),
        truncated=truncated,
    )
