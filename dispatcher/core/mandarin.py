"""What espeak-ng is given to say a Chinese text in Mandarin: tone-numbered pinyin.

espeak-ng's ``cmn`` voice, as Debian ships it (1.51), reads many characters through their
dictionary pinyin and then reads that pinyin as English: 台风红色预警 comes out as "tei two
feng one …", 你好 as "ni three hao three". Its ``cmn-latn-pinyin`` voice says tone-numbered
pinyin right. So the engine (rendering announcements) and the reference terminal (its own
speech) both turn a text into pinyin first, with pypinyin's dictionary (phrases, so 银行 and
行走 get their own readings), numbers into Chinese numerals (12级 is 十二级, not "twelve"),
and Chinese punctuation into the pauses espeak-ng knows. Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Final

# The voice that says tone-numbered pinyin; voices that stand for Mandarin and are better
# served by it.
PINYIN_VOICE: Final = "cmn-latn-pinyin"
MANDARIN_VOICES: Final = frozenset({"cmn", "zh", "zh-cmn", "cmn-latn-pinyin"})

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DIGITS = "零一二三四五六七八九"
CODE_DIGITS = 7
_PAUSES = str.maketrans(
    {
        "。": ". ", "！": ". ", "？": "? ", "；": ", ", "，": ", ", "、": ", ", "：": ", ",
        "（": ", ", "）": ", ", "《": " ", "》": " ", "“": " ", "”": " ", "‘": " ", "’": " ",
        "—": ", ", "…": ". ", "·": " ", "～": " ", "%": "百分", "％": "百分",
    }
)  # fmt: skip


def has_chinese(text: str) -> bool:
    return _CJK.search(text) is not None


def _below_10000(n: int) -> str:
    out = ""
    zero = False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit, n = divmod(n, value)
        if digit:
            if zero:
                out += "零"
            out += _DIGITS[digit] + unit
            zero = False
        elif out:
            zero = True
    return out


def chinese_number(text: str) -> str:
    """``12`` → 十二, ``2026`` → 二千零二十六, ``3.5`` → 三点五; a number of ``CODE_DIGITS`` or
    more digits, or with a leading zero (a phone number, a region code), digit by digit."""
    whole, _, fraction = text.partition(".")
    n = int(whole)
    if n == 0:
        said = "零"
    elif len(whole) >= CODE_DIGITS or whole.startswith("0"):
        said = "".join(_DIGITS[int(d)] for d in whole)  # a phone number, a code: digit by digit
    else:
        parts: list[str] = []
        for value, unit in ((10**8, "亿"), (10**4, "万"), (1, "")):
            group, n = divmod(n, value)
            if group:
                if parts and group < 1000:
                    parts.append("零")
                parts.append(_below_10000(group) + unit)
        said = "".join(parts)
        if said.startswith("一十"):
            said = said[1:]  # 十二, not 一十二
    if fraction:
        said += "点" + "".join(_DIGITS[int(d)] for d in fraction)
    return said


def pinyin_speech(text: str) -> str:
    """``text`` as tone-numbered pinyin for espeak-ng's ``cmn-latn-pinyin`` voice; what is not
    Chinese (Latin letters, codes) is kept as it is."""
    # Imported here: its dictionaries are ~50 MB, loaded by the first announcement, not by
    # every engine and terminal that never speaks Chinese.
    from pypinyin import Style, lazy_pinyin

    text = _NUMBER.sub(lambda m: chinese_number(m.group()), text).translate(_PAUSES)
    syllables = lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True)
    return re.sub(r"\s+", " ", " ".join(syllables)).strip()


def espeak_input(text: str, voice: str) -> tuple[str, str]:
    """(voice, text) to give espeak-ng: a Chinese text for a Mandarin voice goes as pinyin to
    ``PINYIN_VOICE``; anything else unchanged."""
    if voice in MANDARIN_VOICES and has_chinese(text):
        return PINYIN_VOICE, pinyin_speech(text)
    return voice, text
