"""How a Chinese text is given to espeak-ng: tone-numbered pinyin for its pinyin voice (its
``cmn`` voice, as Debian ships it, reads many characters as English words), numbers as
Chinese numerals, punctuation as pauses."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from dispatcher.core.mandarin import PINYIN_VOICE, chinese_number, espeak_input, pinyin_speech


@pytest.mark.parametrize(
    ("number", "said"),
    [
        ("0", "零"),
        ("7", "七"),
        ("10", "十"),
        ("12", "十二"),
        ("105", "一百零五"),
        ("1005", "一千零五"),
        ("2026", "二千零二十六"),
        ("10086", "一万零八十六"),
        ("123456", "十二万三千四百五十六"),
        ("999999", "九十九万九千九百九十九"),
        ("3.5", "三点五"),
        ("1234567", "一二三四五六七"),  # seven digits and more: a code, digit by digit
        ("13812345678", "一三八一二三四五六七八"),
        ("0591", "零五九一"),
    ],
)
def test_numbers_are_said_in_chinese(number: str, said: str) -> None:
    assert chinese_number(number) == said


def test_a_warning_becomes_tone_numbered_pinyin_with_pauses() -> None:
    said = pinyin_speech("台风红色预警：预计未来24小时有12级大风。请立即转移！")
    assert said == (
        "tai2 feng1 hong2 se4 yu4 jing3 , yu4 ji4 wei4 lai2 er4 shi2 si4 xiao3 shi2 you3 "
        "shi2 er4 ji2 da4 feng1 . qing3 li4 ji2 zhuan3 yi2 ."
    )


def test_phrases_get_their_own_readings() -> None:
    assert pinyin_speech("银行") == "yin2 hang2"
    assert pinyin_speech("行走") == "xing2 zou3"


def test_only_chinese_for_a_mandarin_voice_is_turned_into_pinyin() -> None:
    assert espeak_input("暴雨蓝色预警", "cmn")[0] == PINYIN_VOICE
    assert espeak_input("Rainstorm warning", "en") == ("en", "Rainstorm warning")
    assert espeak_input("Rainstorm warning", "cmn") == ("cmn", "Rainstorm warning")
    assert espeak_input("暴雨蓝色预警", "yue") == ("yue", "暴雨蓝色预警")  # reads characters


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_says_it_all_in_mandarin_phonemes() -> None:
    # ``-x`` prints the phonemes; "(en)" marks a switch to English, which the cmn voice makes
    # for 台, 红, 警 and many more.
    voice, text = espeak_input("台风红色预警，降雨量50毫米，请立即转移。", "cmn")
    phonemes = subprocess.run(
        ["espeak-ng", "-q", "-x", "-v", voice, "--", text],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert phonemes.strip()
    assert "(en)" not in phonemes
    raw = subprocess.run(
        ["espeak-ng", "-q", "-x", "-v", "cmn", "--", "台风红色预警"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert "(en)" in raw  # why this module exists: if this ever fails, Debian fixed cmn
