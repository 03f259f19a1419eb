"""SMS text: GSM-7/UCS-2 segmentation at its edge lengths, fitting a segment cap, composing."""

from __future__ import annotations

import unicodedata

import pytest

from adapters.sms.text import (
    ELLIPSIS,
    GSM7_BASIC,
    GSM7_EXTENSION,
    Encoding,
    Segmentation,
    SmsText,
    compose,
    fit,
    segment,
)

GSM7 = Encoding.GSM7
UCS2 = Encoding.UCS2

# Counted here independently of the module: extension characters by their own list, UCS-2
# units by actually encoding to UTF-16.
_EXTENSION_CHARS = "\f^{}\\[~]|€"


def gsm_units(s: str) -> int:
    return sum(2 if ch in _EXTENSION_CHARS else 1 for ch in s)


def ucs2_units(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def units_of(s: str, encoding: Encoding) -> int:
    return gsm_units(s) if encoding is GSM7 else ucs2_units(s)


def check_parts(text: str, seg: Segmentation) -> None:
    """The invariants every segmentation keeps, whatever the text."""
    assert "".join(seg.parts) == text
    assert len(seg.parts) == seg.segments
    assert seg.units == units_of(text, seg.encoding)
    for part in seg.parts:
        assert units_of(part, seg.encoding) <= seg.per_segment
        part.encode("utf-16-le")  # raises on a lone surrogate, i.e. a split pair


# --- the GSM 03.38 table ---------------------------------------------------------------------


def test_gsm7_basic_table_is_the_03_38_table() -> None:
    # 128 code points minus ESC.
    assert len(GSM7_BASIC) == 127
    assert "\x1b" not in GSM7_BASIC
    for ch in "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡§¿äöñüàÄÖÑÜ":
        assert ch in GSM7_BASIC, repr(ch)
    # The Greek capitals must be Greek letters, not look-alikes (∆ U+2206, Ω U+2126).
    for ch in "ΔΦΓΛΩΠΨΣΘΞ":
        assert unicodedata.name(ch).startswith("GREEK CAPITAL LETTER")
    assert frozenset(_EXTENSION_CHARS) == GSM7_EXTENSION
    assert not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize(
    "ch",
    [
        "`",  # ASCII, yet not in GSM 03.38
        "ç",  # only the capital Ç is in the table
        "á",
        "α",  # lowercase Greek is not
        "∆",  # INCREMENT, the look-alike of Δ
        "\t",
        "…",
        "“",
        "\u3000",  # ideographic space
    ],
)
def test_characters_outside_gsm7_force_ucs2(ch: str) -> None:
    seg = segment("abc" + ch)
    assert seg.encoding is UCS2
    assert seg.units == 4


# --- segmentation ----------------------------------------------------------------------------

A = "a"
ZH = "中"
EMOJI = "😀"  # U+1F600, outside the BMP: one surrogate pair

SEGMENT_CASES: list[tuple[str, str, Encoding, int, int, list[int]]] = [
    # (id, text, encoding, units, per_segment, units of each part)
    ("empty", "", GSM7, 0, 160, [0]),
    ("gsm-1", A, GSM7, 1, 160, [1]),
    ("gsm-160", A * 160, GSM7, 160, 160, [160]),
    ("gsm-161", A * 161, GSM7, 161, 153, [153, 8]),
    ("gsm-306", A * 306, GSM7, 306, 153, [153, 153]),
    ("gsm-307", A * 307, GSM7, 307, 153, [153, 153, 1]),
    ("newlines-count-1", "a\nb\rc" * 32, GSM7, 160, 160, [160]),
    ("zh-70", ZH * 70, UCS2, 70, 70, [70]),
    ("zh-71", ZH * 71, UCS2, 71, 67, [67, 4]),
    ("zh-134", ZH * 134, UCS2, 134, 67, [67, 67]),
    ("zh-135", ZH * 135, UCS2, 135, 67, [67, 67, 1]),
    ("one-zh-in-159-ascii", A * 80 + ZH + A * 79, UCS2, 160, 67, [67, 67, 26]),
    ("one-zh-in-69-ascii", A * 69 + ZH, UCS2, 70, 70, [70]),
    # An escape pair filling units 152-153 exactly stays in the first segment.
    ("escape-at-152-153", A * 151 + "{" + A * 10, GSM7, 163, 153, [153, 10]),
    # Only unit 153 is left: the pair goes whole to the next segment, 152 stays used.
    ("escape-at-153-moves", A * 152 + "{" + A * 10, GSM7, 164, 153, [152, 12]),
    # 306 units, yet 3 segments: the moved pair wastes a unit, so ceil(306/153) is wrong.
    ("escape-costs-a-segment", A * 152 + "{" + A * 152, GSM7, 306, 153, [152, 153, 1]),
    ("escape-in-single", "{}" * 40, GSM7, 160, 160, [160]),
    ("escape-over-single", "{}" * 40 + A, GSM7, 161, 153, [152, 9]),
    ("form-feed-is-extension", "\f" * 3, GSM7, 6, 160, [6]),
    ("euro-80", "€" * 80, GSM7, 160, 160, [160]),
    ("euro-81", "€" * 81, GSM7, 162, 153, [152, 10]),
    ("euro-in-160-chars", A * 159 + "€", GSM7, 161, 153, [153, 8]),
    ("emoji-35", EMOJI * 35, UCS2, 70, 70, [70]),
    ("emoji-36", EMOJI * 36, UCS2, 72, 67, [66, 6]),
    ("emoji-at-66-67", ZH * 65 + EMOJI + ZH * 10, UCS2, 77, 67, [67, 10]),
    ("emoji-at-67-moves", ZH * 66 + EMOJI + ZH * 10, UCS2, 78, 67, [66, 12]),
    ("mixed-scripts", "Alert 警报 Тревога €5 😀", UCS2, 22, 70, [22]),
    ("greek-capitals-are-gsm", "ΔΦΓΛΩΠΨΣΘΞ", GSM7, 10, 160, [10]),
]


@pytest.mark.parametrize(
    ("text", "encoding", "units", "per_segment", "part_units"),
    [pytest.param(*case[1:], id=case[0]) for case in SEGMENT_CASES],
)
def test_segment(
    text: str, encoding: Encoding, units: int, per_segment: int, part_units: list[int]
) -> None:
    seg = segment(text)
    assert seg.encoding is encoding
    assert seg.units == units
    assert seg.segments == len(part_units)
    assert seg.per_segment == per_segment
    assert [units_of(p, encoding) for p in seg.parts] == part_units
    check_parts(text, seg)


def test_moved_pairs_start_the_next_segment() -> None:
    assert segment(A * 152 + "{" + A * 10).parts[1].startswith("{")
    assert segment(ZH * 66 + EMOJI + ZH * 10).parts[1].startswith(EMOJI)
    assert segment("€" * 81).parts[0] == "€" * 76


def test_empty_text_is_one_empty_segment() -> None:
    assert segment("") == Segmentation(GSM7, 0, 1, 160, ("",))


@pytest.mark.parametrize("n", range(0, 500, 7))
@pytest.mark.parametrize("unit", [A, ZH, "{", EMOJI, "a{", "中😀", "ab€"])
def test_segment_invariants_across_lengths(unit: str, n: int) -> None:
    text = unit * n
    check_parts(text, segment(text))


# --- fit -------------------------------------------------------------------------------------


def test_fit_leaves_a_text_that_fits_alone() -> None:
    assert fit("[X] ", "a" * 152, 1) == ("[X] " + "a" * 152, False)  # 160 units exactly
    assert fit("", "", 1) == ("", False)
    assert fit("中" * 70, "", 1) == ("中" * 70, False)


def test_fit_exactly_fitting_multi_segment_text_is_not_cut() -> None:
    body = ZH * (6 * 67 - 3)  # 【省】 is 3 units
    assert fit("【省】", body, 6) == ("【省】" + body, False)
    assert fit("【省】", body + ZH, 6)[1] is True


def test_fit_cuts_the_body_at_the_largest_length_that_fits() -> None:
    text, truncated = fit("P", "b" * 200, 1)
    assert truncated
    # The ellipsis makes it UCS-2: 70 units, 1 for P and 1 for the ellipsis.
    assert text == "P" + "b" * 68 + ELLIPSIS
    assert segment(text) == Segmentation(UCS2, 70, 1, 70, (text,))


def test_fit_gsm_text_switches_to_ucs2_with_the_ellipsis() -> None:
    # 504 GSM-7 units need 4 segments of 153; cut, the text is UCS-2 and 3 × 67 = 201 units.
    text, truncated = fit("[X] ", "a" * 500, 3)
    assert truncated
    seg = segment(text)
    assert seg.encoding is UCS2
    assert seg.segments == 3
    assert len(text) == 201
    assert text == "[X] " + "a" * 196 + ELLIPSIS
    # Had the cut been measured as GSM-7, it would have kept up to 459 units and needed 7.
    assert segment("[X] " + "a" * 450 + ELLIPSIS).segments == 7


def test_fit_strips_whitespace_before_the_ellipsis() -> None:
    body = "a" * 60 + " " * 20 + "b" * 100
    text, truncated = fit("P", body, 1)
    assert truncated
    assert text == "P" + "a" * 60 + ELLIPSIS


def test_fit_never_cuts_the_prefix() -> None:
    prefix = "【测试】" + ZH * 60
    text, truncated = fit(prefix, ZH * 100, 1)
    assert truncated
    assert text == prefix + ZH * 5 + ELLIPSIS  # 64 + 5 + 1 = 70
    # A prefix that leaves room for nothing but the ellipsis still goes out.
    assert fit(ZH * 69, "x" * 10, 1) == (ZH * 69 + ELLIPSIS, True)


def test_fit_raises_when_even_the_prefix_and_ellipsis_do_not_fit() -> None:
    with pytest.raises(ValueError, match="prefix"):
        fit(ZH * 70, "x", 1)
    with pytest.raises(ValueError, match="prefix"):
        fit(ZH * 200, "x", 2)
    with pytest.raises(ValueError, match="max_segments"):
        fit("", "x", 0)


def test_fit_keeps_a_surrogate_pair_whole() -> None:
    text, truncated = fit("", EMOJI * 100, 1)
    assert truncated
    # 34 emoji are 68 units; a 35th would need 70 + the ellipsis.
    assert text == EMOJI * 34 + ELLIPSIS
    assert segment(text).units == 69
    # Only the last character is cut: the emoji is 2 units, the ellipsis that replaces it 1.
    assert fit("", ZH * 69 + EMOJI, 1) == (ZH * 69 + ELLIPSIS, True)


@pytest.mark.parametrize(
    ("body", "kept"),
    [
        # e + COMBINING ACUTE: the cut at 69 would orphan the accent, so it moves before the e.
        ("a" * 68 + "e\u0301" + "x" * 20, "a" * 68),
        # A flag is two regional indicators; the cut would fall between them.
        ("a" * 67 + "🇨🇳" + "x" * 20, "a" * 67),
        # A ZWJ sequence (woman + ZWJ + laptop) is one glyph.
        ("a" * 66 + "👩\u200d💻" + "x" * 20, "a" * 66),
        ("a" * 66 + "👍🏽" + "x" * 20, "a" * 66),  # skin-tone modifier
    ],
)
def test_fit_does_not_cut_inside_what_shows_as_one_character(body: str, kept: str) -> None:
    text, truncated = fit("", body, 1)
    assert truncated
    assert text == kept + ELLIPSIS


def test_fit_cuts_between_two_whole_flags() -> None:
    flags = "🇨🇳🇺🇸🇯🇵"
    text, _ = fit("", "a" * 61 + flags + "x" * 20, 1)
    # 61 + 4 (two flags) + 1 = 66 ≤ 70; the third flag would make 70 + the ellipsis.
    assert text == "a" * 61 + "🇨🇳🇺🇸" + ELLIPSIS


@pytest.mark.parametrize("max_segments", [1, 2, 3, 6])
@pytest.mark.parametrize("unit", [A, ZH, "{", EMOJI, "a中", "ab😀"])
def test_fit_is_correct_at_every_length(unit: str, max_segments: int) -> None:
    prefix = "【省】【演练】"
    for n in range(0, 460 // len(unit), 3):
        body = unit * n
        text, truncated = fit(prefix, body, max_segments)
        seg = segment(text)
        assert seg.segments <= max_segments
        assert text.startswith(prefix)
        if not truncated:
            assert text == prefix + body
            continue
        assert segment(prefix + body).segments > max_segments
        assert text.endswith(ELLIPSIS)
        kept = text[len(prefix) : -1]
        assert body.startswith(kept)
        # Maximal: one more character of the body would not fit.
        longer = prefix + body[: len(kept) + 1] + ELLIPSIS
        assert segment(longer).segments > max_segments


# --- compose ---------------------------------------------------------------------------------

SIG = "福建省应急管理厅"
HEADLINE = "福州市暴雨红色预警"
TEXT = "预计未来3小时福州市区将出现100毫米以上降雨。"
INSTRUCTION = "请立即停止户外活动，远离低洼地带。"


def zh_sms(**overrides: object) -> SmsText:
    """The Chinese SMS of the test alert, with ``overrides`` of compose's arguments."""
    args: dict[str, object] = {
        "signature": SIG,
        "headline": HEADLINE,
        "text": TEXT,
        "instruction": INSTRUCTION,
        "status": "actual",
        "msg_type": "alert",
    }
    args.update(overrides)
    return compose(**args)  # type: ignore[arg-type]


def zh(**overrides: object) -> str:
    return zh_sms(**overrides).text


def test_compose_zh_alert() -> None:
    sms = zh_sms()
    assert sms.text == f"【{SIG}】{HEADLINE}：{TEXT}{INSTRUCTION}"
    assert sms.signature == SIG
    assert sms.body == f"{HEADLINE}：{TEXT}{INSTRUCTION}"
    assert sms.text == f"【{SIG}】" + sms.body
    assert not sms.truncated
    assert sms.segmentation == segment(sms.text)
    assert sms.segmentation.encoding is UCS2
    assert sms.segmentation.units == len(sms.text)


# The marks a text starts with, by status and message type: Chinese, then English.
MARKS = [
    ("actual", "alert", "", ""),
    ("exercise", "alert", "【演练】", "[EXERCISE] "),
    ("test", "alert", "【测试】", "[TEST] "),
    ("actual", "update", "更新：", "Update: "),
    ("exercise", "update", "【演练】更新：", "[EXERCISE] Update: "),
    ("test", "update", "【测试】更新：", "[TEST] Update: "),
    ("actual", "cancel", "", ""),
    ("exercise", "cancel", "【演练】", "[EXERCISE] "),
]


@pytest.mark.parametrize(("status", "msg_type", "marks", "_en"), MARKS)
def test_compose_zh_marks(status: str, msg_type: str, marks: str, _en: str) -> None:
    assert (
        zh(status=status, msg_type=msg_type) == f"【{SIG}】{marks}{HEADLINE}：{TEXT}{INSTRUCTION}"
    )


@pytest.mark.parametrize(("status", "msg_type", "_zh", "marks"), MARKS)
def test_compose_en_marks(status: str, msg_type: str, _zh: str, marks: str) -> None:
    sms = compose(
        signature="Fujian EMA",
        headline="Rainstorm red warning",
        text="Over 100 mm of rain expected in 3 hours.",
        instruction="Stay away from low ground.",
        status=status,
        msg_type=msg_type,
        lang="en",
    )
    body = f"{marks}Rainstorm red warning: Over 100 mm of rain expected in 3 hours. "
    body += "Stay away from low ground."
    assert sms.text == "[Fujian EMA] " + body
    assert sms.body == body
    assert sms.segmentation.encoding is GSM7
    # [ and ] are extension characters: 2 units each.
    brackets = sms.text.count("[") + sms.text.count("]")
    assert brackets == (4 if marks.startswith("[") else 2)
    assert sms.segmentation.units == len(sms.text) + brackets


def test_compose_en_brackets_cost_a_segment_at_160() -> None:
    def en(text: str) -> str:
        return compose(
            signature="EMA",
            headline="",
            text=text,
            instruction=None,
            status="actual",
            msg_type="alert",
            lang="en",
            max_segments=2,
        ).text

    # "[EMA] " is 6 characters but 8 units.
    fits = en("a" * 152)
    assert len(fits) == 158
    assert segment(fits).segments == 1
    over = en("a" * 153)
    assert len(over) == 159  # under 160 characters, yet 161 units
    assert segment(over).segments == 2


@pytest.mark.parametrize(
    ("text", "instruction", "expected"),
    [
        ("正文", "请转移", "正文。请转移"),  # no punctuation: a full stop goes between
        ("正文。", "请转移", "正文。请转移"),
        ("正文！", "请转移", "正文！请转移"),
        ("正文？", "请转移", "正文？请转移"),
        ("正文.", "请转移", "正文.请转移"),
        ("正文!", "请转移", "正文!请转移"),
        ("正文…", "请转移", "正文…请转移"),
        ("他说“快跑。”", "请转移", "他说“快跑。”请转移"),  # the stop before a closing quote counts
        ("正文（见附图）", "请转移", "正文（见附图）。请转移"),
        ("正文，", "请转移", "正文，。请转移"),  # a comma does not end a sentence
        ("正文", None, "正文"),
        ("正文", "", "正文"),
        ("正文", "  \n ", "正文"),
    ],
)
def test_compose_zh_instruction_joining(text: str, instruction: str | None, expected: str) -> None:
    assert zh(headline="标题", text=text, instruction=instruction) == f"【{SIG}】标题：{expected}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Flooding expected", "Flooding expected. Move up."),
        ("Flooding expected.", "Flooding expected. Move up."),
        ("Flooding expected!", "Flooding expected! Move up."),
        ('He said "run."', 'He said "run." Move up.'),
    ],
)
def test_compose_en_instruction_joining(text: str, expected: str) -> None:
    sms = compose(
        signature="EMA",
        headline="Flood",
        text=text,
        instruction="Move up.",
        status="actual",
        msg_type="alert",
        lang="en",
    )
    assert sms.body == f"Flood: {expected}"


def test_compose_missing_headline_or_text() -> None:
    assert zh(headline="", text="正文", instruction="请转移") == f"【{SIG}】正文。请转移"
    assert zh(headline="标题", text="", instruction="请转移") == f"【{SIG}】标题。请转移"
    assert zh(headline="", text="", instruction="请转移") == f"【{SIG}】请转移"
    assert zh(headline="标题", text="", instruction=None) == f"【{SIG}】标题"


def test_compose_custom_replaces_headline_text_and_instruction() -> None:
    custom = "福州市区暴雨红色预警，请立即避险。"
    assert zh(custom=custom) == f"【{SIG}】{custom}"
    assert (
        zh(custom=custom, status="exercise", msg_type="update")
        == f"【{SIG}】【演练】更新：{custom}"
    )
    # A blank custom text is no custom text.
    assert zh(custom=" \n ") == zh()


def test_compose_collapses_whitespace() -> None:
    sms = compose(
        signature="  福建省\n应急管理厅 ",
        headline="\t暴雨\n预警  ",
        text="  预计\n\n未来   3小时\t降雨\u3000较大 ",
        instruction="\n请 转移\r\n",
        status="actual",
        msg_type="alert",
    )
    assert sms.signature == "福建省 应急管理厅"
    assert sms.text == "【福建省 应急管理厅】暴雨 预警：预计 未来 3小时 降雨 较大。请 转移"
    custom = zh(custom="第一行\n\n第二行   第三行\n")
    assert custom == f"【{SIG}】第一行 第二行 第三行"


def test_compose_caps_a_1000_character_text() -> None:
    long_text = "降雨" * 500
    sms = zh_sms(text=long_text, status="exercise", msg_type="update")
    assert sms.truncated
    assert sms.segmentation.segments == 6
    # Greedy packing of BMP characters fills all six 67-unit segments.
    assert sms.segmentation.units == 6 * 67
    assert sms.text.startswith(f"【{SIG}】【演练】更新：{HEADLINE}：降雨")
    assert sms.text.endswith(ELLIPSIS)
    assert INSTRUCTION not in sms.text
    assert sms.body == sms.text.removeprefix(f"【{SIG}】")


def en_sms(**overrides: object) -> SmsText:
    """An English flood SMS without instruction, with ``overrides`` of compose's arguments."""
    args: dict[str, object] = {
        "signature": "EMA",
        "headline": "Flood",
        "text": "word " * 200,
        "instruction": None,
        "status": "actual",
        "msg_type": "alert",
        "lang": "en",
    }
    args.update(overrides)
    return compose(**args)  # type: ignore[arg-type]


def en_words(signature: str, max_segments: int) -> SmsText:
    return en_sms(signature=signature, status="test", max_segments=max_segments)


@pytest.mark.parametrize("max_segments", [1, 2, 3, 6])
def test_compose_caps_an_ascii_text_as_ucs2(max_segments: int) -> None:
    sms = en_words("EMA", max_segments)
    assert sms.truncated
    assert sms.segmentation.encoding is UCS2  # the ellipsis is not GSM-7
    assert sms.segmentation.segments == max_segments
    cap = 70 if max_segments == 1 else 67 * max_segments
    # Full, or one short where the cut fell after a space that was then dropped.
    assert sms.segmentation.units in (cap - 1, cap)
    assert sms.text.startswith("[EMA] [TEST] Flood: word")
    assert sms.text.endswith(ELLIPSIS)
    assert not sms.text[-2].isspace()


def test_compose_ascii_text_that_fits_as_gsm7_is_not_cut() -> None:
    # 1019 characters + 4 brackets = 1023 units: 7 GSM-7 segments, but 16 had it been UCS-2.
    sms = en_words("EMA", 10)
    assert not sms.truncated
    assert sms.segmentation.encoding is GSM7
    assert sms.segmentation.units == 1023
    assert sms.segmentation.segments == 7


def test_compose_cut_after_a_space_drops_the_space() -> None:
    # "[EM] [TEST] " is 12 characters; 57 more reach "… word " and the 70th unit is the "…".
    sms = en_words("EM", 1)
    assert sms.text == "[EM] [TEST] Flood: " + "word " * 9 + "word" + ELLIPSIS
    assert sms.segmentation.units == 69


def test_compose_short_texts_are_not_truncated() -> None:
    sms = en_sms(text="a" * 140, max_segments=1)
    assert not sms.truncated
    assert sms.segmentation.encoding is GSM7
    assert sms.segmentation.units == 8 + 7 + 140


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"status": "draft"}, "status"),
        ({"msg_type": "ack"}, "message type"),
        ({"lang": "fr"}, "language"),
        ({"signature": "  "}, "signature"),
        ({"headline": "", "text": " ", "instruction": None}, "needs"),
        ({"signature": "省" * 80, "max_segments": 1}, "prefix"),
    ],
)
def test_compose_rejects(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        zh(**overrides)
