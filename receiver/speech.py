"""What a loudspeaker can say: the words of an announcement, cleaned for a speech synthesiser.

Pure (standard library only), so the terminal side stays ``receiver/`` plus the contract files.
The engine refuses emoji and other pictographs in an alert's texts (``dispatcher.core.validation``),
but a terminal must not rely on the engine alone: a synthesiser reads a stray emoji out by its
name, or stalls on a control character, in the middle of a warning. ``speakable`` removes what
cannot be said, so what is left is read as written.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

__all__ = ["is_english", "lifted", "speakable", "unspeakable"]

# Pictographs, dingbats and the pieces emoji are built from (variation selectors, the zero
# width joiner, keycaps, tags, skin tones, flags). Letterlike and unit symbols (℃, °, ㎜) are
# not here, nor arrows, ①② and ■: texts need them, and synthesisers read or skip them.
_PICTOGRAPH_RANGES: Final = (
    (0x231A, 0x231B),  # ⌚ ⌛
    (0x23E9, 0x23FA),  # ⏩ … ⏺
    (0x2600, 0x27BF),  # miscellaneous symbols and dingbats: ☀ ⚠ ✅ …
    (0x2B00, 0x2BFF),  # miscellaneous symbols and arrows: ⭐ …
    (0x3030, 0x3030),
    (0x303D, 0x303D),
    (0x3297, 0x3299),  # circled ideographs used as emoji
    (0xFE00, 0xFE0F),  # variation selectors
    (0x1F000, 0x1FAFF),  # mahjong … symbols and pictographs extended-A
    (0xE0000, 0xE007F),  # tags
    (0xE0100, 0xE01EF),  # variation selectors supplement
)
# Control, format (zero width joiner, bidi marks …), surrogate, private use, unassigned.
_UNSAYABLE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_SPACES = re.compile(r"\s+")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def unspeakable(ch: str) -> bool:
    """True for a character a loudspeaker cannot say: an emoji or other pictograph, or an
    invisible control or format character. Whitespace is speakable (a pause)."""
    if ch in "\n\t\r":
        return False
    code = ord(ch)
    if any(low <= code <= high for low, high in _PICTOGRAPH_RANGES):
        return True
    return unicodedata.category(ch) in _UNSAYABLE_CATEGORIES


def speakable(text: str) -> str:
    """``text`` without what ``unspeakable`` finds, its runs of whitespace made one space."""
    kept = "".join(" " if ch in "\n\t\r" else ch for ch in text if not unspeakable(ch))
    return _SPACES.sub(" ", kept).strip()


def is_english(text: str) -> bool:
    """An English text: Latin letters and no Chinese characters. Alerts carry no language
    field; the office writes them in the language the village is to hear."""
    return _CJK.search(text) is None and _LATIN.search(text) is not None


def lifted(headline: str, *, english: bool) -> str:
    """The announcement of a cancel: what is lifted, in the alert's language."""
    headline = headline.strip().rstrip("。.！!")
    if english:
        return (
            f"Cancelled: {headline}. The warning is lifted."
            if headline
            else ("Cancelled: the earlier warning is lifted.")
        )
    return f"【解除】{headline}，现已解除。" if headline else "【解除】此前发布的预警现已解除。"
