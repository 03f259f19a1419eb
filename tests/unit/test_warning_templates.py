"""The built-in warning templates: every one gives a valid alert in both languages, its SMS fits
one segment in Chinese, and an office's edit is checked like an alert's texts."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from adapters.sms.text import compose
from dispatcher.core.models import _EVENT_CODE, AlertRequest, Severity
from dispatcher.core.warning_templates import (
    AREA,
    BUILT_IN,
    HAZARD_IDS,
    LANGS,
    TemplateEdit,
    WarningTemplate,
    apply_edit,
    area_phrase,
    render,
)

TEMPLATES = list(BUILT_IN.values())
COUNTIES = ["鼓楼区", "台江区", "仓山区", "马尾区", "晋安区"]


def test_nine_hazards_in_four_colours() -> None:
    assert len(HAZARD_IDS) == 9
    assert len(BUILT_IN) == 36
    for hazard in HAZARD_IDS:
        colours = {t.severity for t in TEMPLATES if t.hazard == hazard}
        assert colours == set(Severity), hazard
    assert {t.event for t in TEMPLATES} == {
        "台风", "暴雨", "洪水", "山体滑坡", "风暴潮", "高温", "寒潮", "大雾", "雷电",
    }  # fmt: skip


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.id)
def test_a_template_has_a_gbt_35561_code_and_one_per_hazard(template: WarningTemplate) -> None:
    assert _EVENT_CODE.match(template.event_code)
    same_hazard = {t.event_code for t in TEMPLATES if t.hazard == template.hazard}
    assert same_hazard == {template.event_code}
    assert template.id == f"{template.hazard}-{template.severity.value}"


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.id)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("names", [COUNTIES[:1], COUNTIES], ids=["one-area", "five-areas"])
def test_every_template_gives_a_valid_alert_in_each_language(
    template: WarningTemplate, lang: Any, names: list[str]
) -> None:
    codes = [f"35010{i + 2}" for i in range(len(names))]
    for sms in (False, True):
        body = render(template, lang=lang, areas=codes, area_names=names, sms=sms)
        request = AlertRequest.model_validate(body)
        assert request.severity is template.severity
        assert request.areas == codes
        assert request.expires_in == template.expires_in
        spoken = [request.headline, request.text, request.instruction or ""]
        assert all(AREA not in text for text in [*spoken, request.sms_text or ""])
        assert names[0] in request.headline
        assert (request.sms_text is not None) is sms
    assert render(template, lang="en", areas=codes, area_names=names, sms=False)["event"] == (
        template.event_en
    )


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.id)
def test_the_chinese_sms_is_one_segment_for_a_county(template: WarningTemplate) -> None:
    body = render(template, lang="zh", areas=["350102"], area_names=["鼓楼区"], sms=True)
    text = compose(
        signature="鼓楼区应急管理局",
        headline=body["headline"],
        text=body["text"],
        instruction=body["instruction"],
        status="actual",
        msg_type="alert",
        custom=body["sms_text"],
    )
    assert text.segmentation.segments == 1, text.text
    assert not text.truncated


def test_more_than_three_areas_are_summed_up() -> None:
    assert area_phrase(COUNTIES[:3], "zh") == "鼓楼区、台江区、仓山区"
    assert area_phrase(COUNTIES, "zh") == "鼓楼区、台江区、仓山区等5个地区"
    assert area_phrase(COUNTIES, "en") == "鼓楼区, 台江区, 仓山区 and 2 more areas"


def test_an_edit_replaces_only_the_fields_it_gives() -> None:
    built_in = BUILT_IN["typhoon-red"]
    changes = TemplateEdit.model_validate(
        {"headline": {"zh": "{area}台风红色预警（本局）", "en": "Red typhoon {area}"}}
    ).changes()
    edited = apply_edit(built_in, changes)
    assert edited.edited
    assert not built_in.edited
    assert edited.headline.zh == "{area}台风红色预警（本局）"
    assert (edited.text, edited.instruction, edited.sms_text, edited.expires_in) == (
        built_in.text,
        built_in.instruction,
        built_in.sms_text,
        built_in.expires_in,
    )
    assert apply_edit(built_in, None) is built_in
    assert apply_edit(built_in, {"expires_in": 600}).expires_in == 600


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"headline": {"zh": "台风\u202e警预", "en": "x"}}, "headline", "U+202E"),
        ({"headline": {"zh": "台风\n预警", "en": "x"}}, "headline", "U+000A"),
        ({"text": {"zh": "台风来了\U0001f300", "en": "x"}}, "text", "U+1F300"),
        ({"text": {"zh": "x", "en": "wind\u0007"}}, "text", "U+0007"),
        ({"instruction": {"zh": "请\u200f转移", "en": "x"}}, "instruction", "U+200F"),
        ({"instruction": {"zh": "私用\ue000字", "en": "x"}}, "instruction", "U+E000"),
        ({"sms_text": {"zh": "短信\x1b[2J", "en": "x"}}, "sms_text", "U+001B"),
        ({"headline": {"zh": "台风"}}, "headline.en", "Field required"),
        ({"headline": {"zh": "", "en": "x"}}, "headline.zh", "at least 1 character"),
        ({"headline": {"zh": "台" * 121, "en": "x"}}, "headline", "at most 120"),
        ({"headline": {"zh": "x", "en": "y", "fr": "z"}}, "headline.fr", "Extra inputs"),
        ({"expires_in": 30}, "expires_in", "greater than or equal to 60"),
        ({"colour": "red"}, "colour", "Extra inputs"),
    ],
)
def test_a_bad_edit_is_refused_naming_the_field(
    body: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        TemplateEdit.model_validate(body)
    (error,) = caught.value.errors()
    assert ".".join(str(p) for p in error["loc"]) == field
    assert says in error["msg"]


def test_an_sms_text_may_hold_what_a_loudspeaker_cannot_say() -> None:
    """Not read out: a phone shows a symbol fine."""
    edit = TemplateEdit.model_validate({"sms_text": {"zh": "台风\u2614预警", "en": "x"}})
    assert edit.sms_text is not None
