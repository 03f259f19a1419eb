"""What a loudspeaker can say: the terminal's cleaning (receiver.speech) and the engine's
refusal (dispatcher.core.validation.speakable) agree on what cannot be said."""

from __future__ import annotations

import pytest

from dispatcher.core.validation import speakable as refuse_unsayable
from receiver.speech import is_english, lifted, speakable, unspeakable

UNSAYABLE = [
    "\U0001f300",  # cyclone
    "\u26a0",  # warning sign
    "\u2705",  # check mark button
    "\ufe0f",  # variation selector-16
    "\u200d",  # zero width joiner
    "\U0001f1e8",  # regional indicator C (flags)
    "\ue000",  # private use
    "\U000e0041",  # tag latin capital letter A
    "\u0378",  # unassigned
    "\u200b",  # zero width space
]
SAYABLE = ["台", "A", "3", "。", "℃", "°", "㎜", "①", "→", "■", "¥", "%", " ", "—", "【", "】"]


@pytest.mark.parametrize("ch", UNSAYABLE)
def test_what_cannot_be_said_is_removed_by_the_terminal_and_refused_by_the_engine(
    ch: str,
) -> None:
    assert unspeakable(ch)
    assert speakable(f"台风{ch}预警") == "台风预警"
    with pytest.raises(ValueError, match=f"U\\+{ord(ch):04X} .* at position 2"):
        refuse_unsayable(f"台风{ch}预警")


@pytest.mark.parametrize("ch", SAYABLE)
def test_what_warnings_use_is_kept_and_accepted(ch: str) -> None:
    assert not unspeakable(ch)
    assert refuse_unsayable(f"气温{ch}") == f"气温{ch}"


def test_the_engine_names_the_character_and_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"U\+1F300 \(cyclone\) at position 0, which a "):
        refuse_unsayable("🌀")
    with pytest.raises(ValueError, match="remove it or write it out in words"):
        refuse_unsayable("ok⚠")
    assert refuse_unsayable(None) is None


def test_line_breaks_become_pauses_and_spaces_collapse() -> None:
    assert speakable("  第一行\n\n第二行\t 完 ") == "第一行 第二行 完"
    assert speakable("🌀🌀") == ""


@pytest.mark.parametrize(
    ("text", "english"),
    [
        ("Rainstorm warning", True),
        ("暴雨 warning", False),
        ("12:00", False),
        ("", False),
        ("Typhoon №5 ℃", True),
    ],
)
def test_english_is_latin_letters_without_chinese(text: str, english: bool) -> None:
    assert is_english(text) is english


def test_a_cancel_says_what_is_lifted() -> None:
    assert lifted("台风红色预警。", english=False) == "【解除】台风红色预警，现已解除。"
    assert lifted("", english=False) == "【解除】此前发布的预警现已解除。"
    assert lifted("Typhoon warning.", english=True) == (
        "Cancelled: Typhoon warning. The warning is lifted."
    )
    assert lifted("  ", english=True) == "Cancelled: the earlier warning is lifted."
