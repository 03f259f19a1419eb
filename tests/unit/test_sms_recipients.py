"""SMS recipients: phone numbers, recipient rows, merging persons and choosing them by area."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.sms.gateway import recipient_key
from adapters.sms.planner import _target
from adapters.sms.recipients import (
    CSV_OPTIONAL,
    CSV_REQUIRED,
    Person,
    Posting,
    RecipientIn,
    Role,
    mask,
    normalize_phone,
    parse_recipients,
    persons_in,
)
from adapters.sms.store import _merged
from dispatcher.core.csv_rows import read_csv_rows
from dispatcher.core.errors import UnknownRegion, ValidationFailed
from dispatcher.core.regions import RegionTree
from tests.helpers import (
    GUDONG,
    GULOU_COUNTY,
    QINGCHENG,
    TAIJIANG_COUNTY,
    TAIJIANG_VILLAGE,
    ZHONGSHAN,
)

# Well-formed, under 鼓东街道, but not in the file (001, 002, 004: no 003).
NOT_IN_TREE = "350102001003"

PHONE = "+8613800138000"
OTHER_PHONE = "+8613900139000"


def row(**fields: Any) -> dict[str, Any]:
    """A valid recipient row; a field given as None is left out."""
    body: dict[str, Any] = {
        "phone": "13800138000",
        "name": "张三",
        "region": ZHONGSHAN,
        "role": "village_head",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def person(phone: str, *postings: tuple[str, Role], languages: list[Any] | None = None) -> Person:
    return Person(
        phone=phone,
        name="张三",
        languages=languages or ["zh"],
        postings=[Posting(region, role) for region, role in postings],
    )


# --- normalize_phone -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        pytest.param("13800138000", PHONE, id="bare"),
        pytest.param("138 0013 8000", PHONE, id="spaces"),
        pytest.param("138-0013-8000", PHONE, id="dashes"),
        pytest.param("(138) 0013.8000", PHONE, id="brackets-dots"),
        pytest.param("  13800138000\t", PHONE, id="surrounding-whitespace"),
        pytest.param("+86 138 0013 8000", PHONE, id="plus-86"),
        pytest.param("+8613800138000", PHONE, id="e164"),
        pytest.param("008613800138000", PHONE, id="00-86"),
        pytest.param("１３８００１３８０００", PHONE, id="full-width"),
        pytest.param("＋８６　１３８　００１３　８０００", PHONE, id="full-width-plus-and-space"),
        pytest.param("19912345678", "+8619912345678", id="199-range"),
        pytest.param("+852 5123 4567", "+85251234567", id="hong-kong"),
        pytest.param("+44 7911 123456", "+447911123456", id="uk-mobile"),
        pytest.param("+1 650 253 0000", "+16502530000", id="us-fixed-line-or-mobile"),
    ],
)
def test_phone_numbers_as_people_write_them_become_e164(raw: str, e164: str) -> None:
    assert normalize_phone(raw) == e164


def test_a_number_without_country_code_is_read_in_the_default_region() -> None:
    assert normalize_phone("5123 4567", default_region="HK") == "+85251234567"


BAD_PHONES = [
    pytest.param("0591-87654321", "is a landline", id="fuzhou-landline"),
    pytest.param("+86 10 1234 5678", "is a landline", id="beijing-landline"),
    pytest.param("+44 20 7946 0958", "is a landline", id="london-landline"),
    pytest.param("400 810 8888", "service number", id="400-number"),
    pytest.param("139567", "has 6 digits after +86", id="too-short-mobile"),
    pytest.param("+852 6789", "too few digits for a +852 number", id="too-short-hong-kong"),
    pytest.param("1", "too few digits", id="one-digit"),
    pytest.param("+86 1395678123", "has 10 digits after +86", id="plus-86-ten-digits"),
    pytest.param("1395678123", "has 10 digits after +86", id="ten-digits"),
    pytest.param("139 5678 12345", "has 12 digits after +86", id="twelve-digits"),
    pytest.param("12345678901", "not a valid +86 number", id="no-such-range"),
    pytest.param("139abc81234", "contains 'a'", id="letters"),
    pytest.param("13956781234x", "contains 'x'", id="trailing-letter"),
    pytest.param("13956781234 ext 5", "contains 'e'", id="extension"),
    pytest.param("139+56781234", "contains '+'", id="plus-inside"),
    pytest.param("一三八", "contains '一'", id="chinese-numerals"),
    pytest.param("", "is empty", id="empty"),
    pytest.param("   ", "is empty", id="blank"),
    pytest.param("+", "no digits", id="plus-only"),
    pytest.param("+999 1234 5678", "no known country code", id="unknown-country-code"),
    pytest.param("1" * 41, "41 characters long", id="pasted-paragraph"),
]


@pytest.mark.parametrize(("raw", "fragment"), BAD_PHONES)
def test_bad_numbers_are_refused_saying_what_is_wrong(raw: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        normalize_phone(raw)


@pytest.mark.parametrize(("raw", "fragment"), BAD_PHONES)
def test_error_messages_never_repeat_the_whole_number(raw: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)) as info:
        normalize_phone(raw)
    message = str(info.value)
    digits = "".join(c for c in raw if c.isascii() and c.isdigit())
    if len(digits) >= 5:
        assert digits not in message.replace(" ", "")
    # A reader can still tell which row is meant.
    if len(digits) >= 8:
        assert f"ending in {digits[-4:]}" in message


def test_error_messages_say_what_to_write() -> None:
    with pytest.raises(ValueError, match=r"such as 13800138000"):
        normalize_phone("138abc")
    with pytest.raises(ValueError, match=r"give a mobile number"):
        normalize_phone("0591-87654321")


def test_the_parser_error_is_not_chained_so_a_traceback_cannot_show_the_input() -> None:
    with pytest.raises(ValueError, match="no known country code") as info:
        normalize_phone("+999 1234 5678")
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        (PHONE, "+86138****8000"),
        ("13800138000", "138****8000"),
        ("+85251234567", "+8525****567"),
        # Not a shape mask_phones knows: only the last four stay.
        ("+8651234", "****1234"),
    ],
)
def test_mask_hides_the_middle_of_a_number(phone: str, masked: str) -> None:
    assert mask(phone) == masked


# --- RecipientIn ---------------------------------------------------------------------------


def test_a_recipient_row_is_stripped_and_its_phone_normalised() -> None:
    recipient = RecipientIn.model_validate(
        row(phone=" 138-0013-8000 ", name="  张三 ", region=f" {ZHONGSHAN} ", role=" resident ")
    )
    assert recipient.phone == PHONE
    assert recipient.name == "张三"
    assert recipient.region == ZHONGSHAN
    assert recipient.role is Role.RESIDENT
    assert recipient.languages == ["zh"]


@pytest.mark.parametrize(
    ("given", "role"),
    [
        ("grid_worker", Role.GRID_WORKER),
        ("Village Head", Role.VILLAGE_HEAD),
        ("duty-officer", Role.DUTY_OFFICER),
    ],
)
def test_roles_are_read_as_spreadsheets_write_them(given: str, role: Role) -> None:
    assert RecipientIn.model_validate(row(role=given)).role is role


@pytest.mark.parametrize(
    ("given", "languages"),
    [
        ("zh", ["zh"]),
        ("en", ["en"]),
        ("zh;en", ["zh", "en"]),
        ("en zh", ["en", "zh"]),
        ("ZH, en; zh", ["zh", "en"]),
        ("  ", ["zh"]),
        (None, ["zh"]),
        (["en", " EN", "zh"], ["en", "zh"]),
    ],
)
def test_languages_come_as_a_list_or_a_csv_cell_first_preferred(
    given: Any, languages: list[str]
) -> None:
    assert RecipientIn.model_validate(row(languages=given)).languages == languages


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"phone": "0591-87654321"}, "phone", id="landline"),
        pytest.param({"phone": 13800138000}, "phone", id="phone-not-a-string"),
        pytest.param({"name": ""}, "name", id="empty-name"),
        pytest.param({"name": "张" * 41}, "name", id="long-name"),
        pytest.param({"name": "张三\n350102,resident"}, "name", id="name-with-line-break"),
        pytest.param({"region": "3501x"}, "region", id="malformed-region"),
        pytest.param({"region": "３５０１"}, "region", id="full-width-region"),
        pytest.param({"role": "mayor"}, "role", id="unknown-role"),
        pytest.param({"languages": "fr"}, "languages.0", id="unknown-language"),
        pytest.param({"languages": []}, "languages", id="no-languages"),
        pytest.param({"email": "a@b.cn"}, "email", id="extra-field"),
        pytest.param({"phone": None}, "phone", id="missing-phone"),
    ],
)
def test_bad_recipient_rows_name_the_field(fields: dict[str, Any], field: str) -> None:
    base = row()
    base.update(fields)
    body = {k: v for k, v in base.items() if v is not None}
    with pytest.raises(ValidationError) as info:
        RecipientIn.model_validate(body)
    assert [".".join(str(p) for p in e["loc"]) for e in info.value.errors()] == [field]


# --- Person --------------------------------------------------------------------------------


def test_a_person_keeps_postings_sorted_and_unique() -> None:
    p = person(
        PHONE,
        (QINGCHENG, Role.RESIDENT),
        (ZHONGSHAN, Role.VILLAGE_HEAD),
        (QINGCHENG, Role.RESIDENT),
        (ZHONGSHAN, Role.DUTY_OFFICER),
    )
    assert p.postings == [
        Posting(ZHONGSHAN, Role.DUTY_OFFICER),
        Posting(ZHONGSHAN, Role.VILLAGE_HEAD),
        Posting(QINGCHENG, Role.RESIDENT),
    ]


def test_a_person_is_keyed_by_the_gateway_key_of_the_number() -> None:
    p = person(PHONE, (ZHONGSHAN, Role.RESIDENT))
    assert p.key == recipient_key(PHONE)
    assert p.key != person(OTHER_PHONE).key


def test_the_first_language_is_preferred() -> None:
    assert person(PHONE, languages=["en", "zh"]).language == "en"


def test_a_person_round_trips_through_compact_json() -> None:
    p = person(
        PHONE, (ZHONGSHAN, Role.VILLAGE_HEAD), (GULOU_COUNTY, Role.OFFICIAL), languages=["zh", "en"]
    )
    text = p.to_json()
    assert " " not in text
    assert "张三" in text  # not \\u5f20: half the bytes in Redis
    assert json.loads(text)["postings"] == [[GULOU_COUNTY, "official"], [ZHONGSHAN, "village_head"]]
    assert Person.from_json(text) == p
    assert Person.from_json(text.encode()) == p


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param("{", id="not-json"),
        pytest.param("[]", id="not-an-object"),
        pytest.param(
            '{"phone":"13800138000","name":"a","languages":["zh"],"postings":[]}', id="not-e164"
        ),
        pytest.param(
            '{"phone":"+8613800138000","name":1,"languages":["zh"],"postings":[]}', id="name"
        ),
        pytest.param(
            '{"phone":"+8613800138000","name":"a","languages":["fr"],"postings":[]}', id="language"
        ),
        pytest.param('{"phone":"+8613800138000","name":"a","languages":["zh"]}', id="no-postings"),
        pytest.param(
            '{"phone":"+8613800138000","name":"a","languages":["zh"],"postings":[["3501x","resident"]]}',
            id="bad-region",
        ),
        pytest.param(
            '{"phone":"+8613800138000","name":"a","languages":["zh"],"postings":[["35","mayor"]]}',
            id="bad-role",
        ),
    ],
)
def test_a_damaged_stored_person_is_refused_without_showing_the_number(stored: str) -> None:
    with pytest.raises(ValueError, match="not a stored recipient") as info:
        Person.from_json(stored)
    assert "13800138000" not in str(info.value)


# --- parse_recipients ----------------------------------------------------------------------


def test_valid_rows_become_persons(tree: RegionTree) -> None:
    persons = parse_recipients(
        [row(), row(phone="139 0013 9000", name="李四", region=TAIJIANG_COUNTY, role="official")],
        tree,
    )
    assert persons == [
        person(PHONE, (ZHONGSHAN, Role.VILLAGE_HEAD)),
        Person(OTHER_PHONE, "李四", ["zh"], [Posting(TAIJIANG_COUNTY, Role.OFFICIAL)]),
    ]


def test_a_person_listed_twice_is_one_person_with_both_postings(tree: RegionTree) -> None:
    persons = parse_recipients(
        [
            row(),
            row(phone="139 0013 9000", name="李四"),
            # The same number written another way, posted elsewhere as something else.
            row(phone="+86 138-0013-8000", region=GUDONG, role="duty_officer"),
        ],
        tree,
    )
    assert [p.phone for p in persons] == [PHONE, OTHER_PHONE]
    assert persons[0].postings == [
        Posting(GUDONG, Role.DUTY_OFFICER),
        Posting(ZHONGSHAN, Role.VILLAGE_HEAD),
    ]


def test_an_exact_duplicate_row_is_merged_not_refused(tree: RegionTree) -> None:
    persons = parse_recipients([row(), row(), row(phone="１３８００１３８０００")], tree)
    assert persons == [person(PHONE, (ZHONGSHAN, Role.VILLAGE_HEAD))]


def test_one_number_with_two_names_is_refused_naming_both_rows(tree: RegionTree) -> None:
    items = [row(), row(phone="139 0013 9000"), row(name="李四", region=GUDONG)]
    with pytest.raises(ValidationFailed) as info:
        parse_recipients(items, tree, row_label="line", row_numbers=[2, 3, 5])
    assert info.value.message.startswith(
        "1 bad line(s); nothing was imported. First: line 5, name: "
        "+86138****8000 is also at line 2 as '张三', here as '李四'"
    )
    assert info.value.details == [
        {
            "line": 5,
            "field": "name",
            "message": "+86138****8000 is also at line 2 as '张三', here as '李四'; "
            "one number is one person: correct the name or the number",
            "type": "conflict",
        }
    ]
    assert "13800138000" not in info.value.message


def test_one_number_with_two_language_lists_is_refused(tree: RegionTree) -> None:
    items = [row(languages="zh;en"), row(region=GUDONG, languages="en;zh")]
    with pytest.raises(ValidationFailed) as info:
        parse_recipients(items, tree)
    [detail] = info.value.details
    assert detail["item"] == 1
    assert detail["field"] == "languages"
    assert "also at item 0 with languages zh;en, here en;zh" in detail["message"]


def test_every_bad_row_is_reported_with_its_row_number(tree: RegionTree) -> None:
    items = [
        row(region="3501x"),
        row(phone="139 0013 9000"),
        row(phone="0591-87654321"),
        row(region="359999"),
        row(role="mayor", name=""),
    ]
    with pytest.raises(ValidationFailed) as info:
        parse_recipients(items, tree, row_label="line", row_numbers=[2, 3, 4, 6, 7])
    assert [(d["line"], d["field"], d["type"]) for d in info.value.details] == [
        (2, "region", "value_error"),
        (4, "phone", "value_error"),
        (6, "region", "unknown_region"),
        (7, "name", "string_too_short"),
        (7, "role", "enum"),
    ]
    assert info.value.message.startswith(
        "5 bad line(s); nothing was imported. First: line 2, region: region '3501x' is malformed"
    )
    assert "'359999' is not in the loaded region tree" in info.value.details[2]["message"]


def test_the_error_of_a_bad_number_does_not_show_the_number(tree: RegionTree) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_recipients([row(phone="0591 8765 4321")], tree)
    assert "87654321" not in info.value.message
    assert "87654321" not in json.dumps(info.value.details)
    assert "ending in 4321 is a landline" in info.value.message


def test_at_most_200_problems_are_detailed_but_all_are_counted(tree: RegionTree) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_recipients([row(region="359999")] * 250, tree)
    assert info.value.message.startswith("250 bad item(s)")
    assert len(info.value.details) == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param([], "the recipient list is empty", id="empty"),
        pytest.param({"phone": "13800138000"}, "send a JSON list of recipients", id="object"),
        pytest.param(None, "send a JSON list of recipients", id="null"),
        pytest.param([row()] * 3, "at most 2 recipients per request", id="too-many"),
    ],
)
def test_a_body_that_is_not_a_usable_list_is_refused(
    tree: RegionTree, body: Any, message: str
) -> None:
    with pytest.raises(ValidationFailed, match=message):
        parse_recipients(body, tree, max_items=2)


def test_a_csv_file_is_checked_by_its_line_numbers(tree: RegionTree, tmp_path: Path) -> None:
    path = tmp_path / "recipients.csv"
    path.write_text(
        "phone,name,region,role,languages\n"
        "13800138000,张三,350102001001,village_head,\n"
        "\n"
        "13900139000,李四,3501x,resident,zh en\n",
        encoding="utf-8",
    )
    rows, lines = read_csv_rows(
        path, required=CSV_REQUIRED, optional=CSV_OPTIONAL, what="recipients"
    )
    with pytest.raises(ValidationFailed, match=r"First: line 4, region: region '3501x'"):
        parse_recipients(rows, tree, row_label="line", row_numbers=lines)


# --- persons_in ----------------------------------------------------------------------------


def test_persons_in_an_area_are_those_posted_in_or_below_it(tree: RegionTree) -> None:
    head = person(PHONE, (ZHONGSHAN, Role.VILLAGE_HEAD))
    official = person(OTHER_PHONE, (TAIJIANG_VILLAGE, Role.OFFICIAL))
    county = person("+8613700137000", (GULOU_COUNTY, Role.DUTY_OFFICER))
    everyone = [head, official, county]
    assert persons_in(everyone, [GULOU_COUNTY], tree) == [head, county]
    assert persons_in(everyone, [GUDONG], tree) == [head]  # the county officer is above it
    assert persons_in(everyone, [QINGCHENG], tree) == []
    assert persons_in(everyone, [GUDONG, TAIJIANG_COUNTY], tree) == [head, official]
    assert persons_in(everyone, ["35"], tree) == everyone


def test_persons_in_filters_by_role_on_the_same_posting(tree: RegionTree) -> None:
    # A village head in 中山 who lives as a resident in 台江.
    both = person(PHONE, (ZHONGSHAN, Role.VILLAGE_HEAD), (TAIJIANG_VILLAGE, Role.RESIDENT))
    assert persons_in([both], [TAIJIANG_COUNTY], tree, roles={Role.RESIDENT}) == [both]
    assert persons_in([both], [TAIJIANG_COUNTY], tree, roles={Role.VILLAGE_HEAD}) == []
    assert persons_in(
        [both], [GULOU_COUNTY], tree, roles={Role.VILLAGE_HEAD, Role.GRID_WORKER}
    ) == [both]
    assert persons_in([both], ["35"], tree, roles=set()) == []


def test_persons_in_gives_a_person_read_twice_once(tree: RegionTree) -> None:
    p = person(PHONE, (ZHONGSHAN, Role.VILLAGE_HEAD), (QINGCHENG, Role.RESIDENT))
    assert persons_in([p, p, Person.from_json(p.to_json())], [GUDONG], tree) == [p]


def test_persons_in_reaches_a_posting_whose_village_left_the_tree(tree: RegionTree) -> None:
    assert NOT_IN_TREE not in tree
    stale = person(PHONE, (NOT_IN_TREE, Role.RESIDENT))
    assert persons_in([stale], [GUDONG], tree) == [stale]
    assert persons_in([stale], [TAIJIANG_COUNTY], tree) == []


def test_persons_in_refuses_unknown_areas_and_bare_strings(tree: RegionTree) -> None:
    p = person(PHONE, (ZHONGSHAN, Role.VILLAGE_HEAD))
    with pytest.raises(UnknownRegion):
        persons_in([p], ["359999"], tree)
    with pytest.raises(TypeError, match="not one string"):
        persons_in([p], GULOU_COUNTY, tree)
    with pytest.raises(TypeError, match="not one string"):
        persons_in([p], [GULOU_COUNTY], tree, roles=Role.VILLAGE_HEAD)  # type: ignore[arg-type]


# --- needs: people who cannot hear the loudspeaker -------------------------------------------


def test_needs_come_as_a_list_and_are_kept_on_the_person(tree: RegionTree) -> None:
    (one,) = parse_recipients([row(needs=["text", " TEXT "])], tree)
    assert one.needs == ["text"]
    assert one.needs_text
    (other,) = parse_recipients([row()], tree)
    assert other.needs == []
    assert not other.needs_text


@pytest.mark.parametrize(
    ("needs", "message"),
    [
        (["braille"], r"item 0, needs: unknown need 'braille'; known: 'text'"),
        (["text", 7], r"item 0, needs: unknown need 7; known: 'text'"),
        ("text", r"item 0, needs: needs must be a list, not str"),
        ({"text": True}, r"item 0, needs: needs must be a list, not dict"),
        (1, r"item 0, needs: needs must be a list, not int"),
        (None, r"item 0, needs: needs must be a list, not NoneType"),
    ],
)
def test_bad_needs_are_refused_naming_the_row_and_the_value(
    tree: RegionTree, needs: Any, message: str
) -> None:
    body = [{**row(), "needs": needs}]
    with pytest.raises(ValidationFailed, match=message) as caught:
        parse_recipients(body, tree)
    assert caught.value.details[0]["field"] == "needs"


def test_rows_of_one_number_join_their_needs(tree: RegionTree) -> None:
    (merged,) = parse_recipients(
        [row(needs=["text"]), row(region=QINGCHENG, role="resident"), row(role="grid_worker")],
        tree,
    )
    assert merged.needs == ["text"]
    assert len(merged.postings) == 3


@pytest.mark.parametrize(("cell", "needs"), [("text", ["text"]), ("Text", ["text"]), ("", [])])
def test_a_csv_needs_cell_is_read(
    tree: RegionTree, tmp_path: Path, cell: str, needs: list[str]
) -> None:
    path = tmp_path / "recipients.csv"
    path.write_text(
        f"phone,name,region,role,needs\n13800138000,张三,{ZHONGSHAN},resident,{cell}\n",
        encoding="utf-8",
    )
    rows, lines = read_csv_rows(
        path, required=CSV_REQUIRED, optional=CSV_OPTIONAL, what="recipients"
    )
    (one,) = parse_recipients(rows, tree, row_label="line", row_numbers=lines, csv=True)
    assert one.needs == needs


def test_a_csv_needs_cell_with_an_unknown_value_is_refused_by_line(
    tree: RegionTree, tmp_path: Path
) -> None:
    path = tmp_path / "recipients.csv"
    path.write_text(
        "phone,name,region,role,needs\n"
        f"13800138000,张三,{ZHONGSHAN},resident,text\n"
        f"13900139000,李四,{ZHONGSHAN},resident,text;braille\n",
        encoding="utf-8",
    )
    rows, lines = read_csv_rows(
        path, required=CSV_REQUIRED, optional=CSV_OPTIONAL, what="recipients"
    )
    with pytest.raises(
        ValidationFailed, match=r"First: line 3, needs: unknown need 'braille'; known: 'text'"
    ):
        parse_recipients(rows, tree, row_label="line", row_numbers=lines, csv=True)


def test_needs_are_stored_only_when_there_are_some() -> None:
    hearing = Person(PHONE, "张三", ["zh"], [Posting(ZHONGSHAN, Role.RESIDENT)], needs=["text"])
    assert json.loads(hearing.to_json())["needs"] == ["text"]
    assert Person.from_json(hearing.to_json()) == hearing
    plain = Person(PHONE, "张三", ["zh"], [Posting(ZHONGSHAN, Role.RESIDENT)])
    assert "needs" not in json.loads(plain.to_json())


def test_a_record_stored_before_needs_existed_still_loads() -> None:
    old = '{"phone":"+8613800138000","name":"张三","languages":["zh"],"postings":[["350102001001","resident"]]}'  # noqa: E501 (a stored record as it is)
    loaded = Person.from_json(old)
    assert loaded.needs == []
    assert loaded.postings == [Posting(ZHONGSHAN, Role.RESIDENT)]
    assert loaded.to_json() == old


@pytest.mark.parametrize("needs", ['"text"', '["braille"]', "null"])
def test_a_stored_record_with_bad_needs_is_refused(needs: str) -> None:
    stored = f'{{"phone":"{PHONE}","name":"x","languages":["zh"],"postings":[],"needs":{needs}}}'
    with pytest.raises(ValueError, match="'needs' is not a list of"):
        Person.from_json(stored)


def _stored(role: str, region: str = ZHONGSHAN, needs: list[str] | None = None) -> str:
    return json.dumps(
        {"phone": PHONE, "name": "张三", "languages": ["en"], "postings": [[region, role]]}
        | ({"needs": needs} if needs else {})
    )


@pytest.mark.parametrize(
    ("stored", "roles", "hearing_only", "texted"),
    [
        # A loudspeaker alert: only those who cannot hear it, whatever their role.
        (_stored("resident", needs=["text"]), None, True, True),
        (_stored("resident"), None, True, False),
        # An SMS alert for village heads: a resident who cannot hear is texted too.
        (_stored("resident", needs=["text"]), frozenset({"village_head"}), False, True),
        (_stored("resident"), frozenset({"village_head"}), False, False),
        (_stored("village_head"), frozenset({"village_head"}), False, True),
        # Outside the areas: nobody.
        (_stored("resident", TAIJIANG_VILLAGE, ["text"]), None, True, False),
    ],
)
def test_the_planner_chooses_who_cannot_hear_in_the_areas(
    stored: str, roles: frozenset[str] | None, hearing_only: bool, texted: bool
) -> None:
    target = _target("k", stored, frozenset({GUDONG}), roles, hearing_only)
    assert target == (("k", PHONE, "en") if texted else None)


def test_an_import_adds_needs_to_a_shared_person_but_never_removes_them() -> None:
    previous = json.dumps(
        {
            "phone": PHONE,
            "name": "张三",
            "languages": ["zh"],
            "postings": [[TAIJIANG_VILLAGE, "resident"]],
            "needs": ["text"],
        }
    )
    new = Person(PHONE, "张三", ["zh"], [Posting(ZHONGSHAN, Role.RESIDENT)]).to_dict()

    def foreign(region: str) -> bool:
        return region.startswith(TAIJIANG_COUNTY)

    assert json.loads(_merged(new, previous, keep=foreign))["needs"] == ["text"]
    # The importing office owns every posting: its list says what the person needs now.
    assert "needs" not in json.loads(_merged(new, previous, keep=lambda region: False))
