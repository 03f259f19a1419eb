"""The people the SMS channel texts: phone numbers, who they are and where they serve.

Pure: no I/O. An office imports recipients as a list (JSON body or CSV rows); every row is
checked, and one bad row rejects the whole list, so a half-imported list never decides who
hears a warning. A person is one mobile number: listed twice (a village head who is also the
duty officer of the township), they become one ``Person`` with two postings and get one
message per alert, not two.

Phone numbers are personal data. Every number is kept in E.164 form (``+8613800138000``) and
no error message repeats a whole number: an import file's errors end up in terminals, logs and
HTTP answers.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, NamedTuple, get_args

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType, ValidationResult
from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.sms.gateway import recipient_key
from dispatcher.core.errors import MalformedRegionCode
from dispatcher.core.import_rows import Checked, accept_rows, check_rows, check_shape
from dispatcher.core.masking import mask_phones
from dispatcher.core.models import _REGION_CODE, RegionCode, well_formed_region
from dispatcher.core.regions import RegionTree, code_path
from dispatcher.core.validation import region_problem

MAX_RECIPIENTS_PER_REQUEST = 100_000
# The columns of a recipient CSV, for ``dispatcher.csv_rows.read_csv_rows``.
CSV_REQUIRED = ("phone", "name", "region", "role")
CSV_OPTIONAL = ("languages", "needs")

Language = Literal["zh", "en"]
LANGUAGES: tuple[Language, ...] = get_args(Language)
# What a person needs beyond the loudspeaker. "text": cannot hear it, so every alert that
# goes to loudspeakers in their area is texted to them too (``adapters.sms.planner``).
Need = Literal["text"]
NEEDS: tuple[Need, ...] = get_args(Need)
NEEDS_TEXT: Need = "text"
_NEEDS_HELP = "known: 'text' (cannot hear the loudspeaker); e.g. [\"text\"], or [] for none"

_EXAMPLE = "write a mobile number such as 13800138000, +86 138 0013 8000 or +852 5123 4567"
# A number written by hand or by a spreadsheet is digits and these; anything else (letters,
# "ext.", "#") means the cell holds something other than one phone number.
_PUNCTUATION = frozenset(" -.()/")
# Longer than any written-out number; stops a pasted paragraph before the parser sees it.
_MAX_PHONE_CHARS = 40
_MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
_NOT_MOBILE = {
    PhoneNumberType.FIXED_LINE: "a landline",
    PhoneNumberType.TOLL_FREE: "a toll-free service number",
    PhoneNumberType.PREMIUM_RATE: "a premium-rate service number",
    PhoneNumberType.SHARED_COST: "a shared-cost service number (such as 400 …)",
    PhoneNumberType.VOIP: "an internet (VoIP) number",
    PhoneNumberType.PERSONAL_NUMBER: "a personal forwarding number",
    PhoneNumberType.PAGER: "a pager number",
    PhoneNumberType.UAN: "a company service number",
    PhoneNumberType.VOICEMAIL: "a voicemail number",
}
# Mainland mobile numbers are 11 digits from 13… to 19…; 10… is Beijing's area code.
_CN_MOBILE_PREFIX = re.compile(r"^1[3-9]")
_LANGUAGE_SEPARATORS = re.compile(r"[;,\s]+")
# A mainland mobile number as an import file or a system writes it: 11 digits, perhaps after
# +86. 179… is left out: the parser may read its first digits as a carrier prefix.
_PLAIN_CN_MOBILE = re.compile(r"(?:\+86)?(1(?:[3-68-9]\d|7[0-8])\d{8})")
# Unicode's control characters (category Cc), as one search instead of a call per character.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# The number ranges (the first 7 digits, a mainland "H code") already found to be mobile.
_MOBILE_RANGES: set[str] = set()


def _which(digits: str) -> str:
    """How an error names a number: by its last four digits, never all of them."""
    return f"the number ending in {digits[-4:]}" if len(digits) >= 8 else "the number"


def normalize_phone(raw: str, default_region: str = "CN") -> str:
    """The E.164 form of a mobile number as people write it; ValueError says what is wrong.

    ``13800138000``, ``138 0013 8000``, ``138-0013-8000``, ``+86 138 0013 8000``,
    ``008613800138000`` and full-width ``１３８００１３８０００`` all give ``+8613800138000``;
    numbers without a country code are read as ``default_region`` numbers. Landlines and
    service numbers are refused: they cannot receive a text message.
    """
    # An import of 100,000 people is mostly such numbers, and the parser takes ~80 µs for
    # each: whether an 11-digit mainland number is a valid mobile one depends on its range
    # (today the library's patterns look at 5 digits at most), so once a number of a range
    # passed the whole check below, the others of that range take this path. Whatever fails
    # still goes the whole way, for its own message.
    plain = _PLAIN_CN_MOBILE.fullmatch(raw) if default_region == "CN" else None
    if plain is not None and plain.group(1)[:7] in _MOBILE_RANGES:
        return "+86" + plain.group(1)
    e164 = _normalize_phone(raw, default_region)
    if plain is not None and e164 == "+86" + plain.group(1):
        _MOBILE_RANGES.add(plain.group(1)[:7])
    return e164


def _normalize_phone(raw: str, default_region: str) -> str:
    # NFKC turns full-width digits, ＋ and the ideographic space into their ASCII forms.
    text = unicodedata.normalize("NFKC", raw).strip()
    if not text:
        raise ValueError(f"the phone number is empty; {_EXAMPLE}")
    digits = "".join(c for c in text if "0" <= c <= "9")
    which = _which(digits)
    if len(text) > _MAX_PHONE_CHARS:
        raise ValueError(f"not a phone number: {which} is {len(text)} characters long; {_EXAMPLE}")
    for index, char in enumerate(text):
        allowed = ("0" <= char <= "9") or char in _PUNCTUATION or (char == "+" and index == 0)
        if not allowed:
            # The offending character alone is safe to show, and it is what needs fixing.
            raise ValueError(f"not a phone number: {which} contains {char!r}; {_EXAMPLE}")
    if not digits:
        raise ValueError(f"not a phone number: it has no digits; {_EXAMPLE}")
    # ``from None`` below: the parser's exception carries no number today, but a chained
    # traceback would put its context, and the input, in front of whoever prints the error.
    try:
        number = phonenumbers.parse(text, default_region)
    except NumberParseException as exc:
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
            raise ValueError(
                f"{which} has no known country code; leave it out for a mainland number "
                "or write one such as +86 or +852"
            ) from None
        if exc.error_type == NumberParseException.TOO_LONG:
            raise ValueError(f"{which} has too many digits; {_EXAMPLE}") from None
        if exc.error_type in (
            NumberParseException.TOO_SHORT_NSN,
            NumberParseException.TOO_SHORT_AFTER_IDD,
        ):
            raise ValueError(f"{which} has too few digits; {_EXAMPLE}") from None
        if len(digits) < 5:
            raise ValueError(f"{which} has too few digits; {_EXAMPLE}") from None
        raise ValueError(f"not a phone number; {_EXAMPLE}") from None
    national = phonenumbers.national_significant_number(number)
    country = f"+{number.country_code}"
    if number.country_code == 86 and _CN_MOBILE_PREFIX.match(national) and len(national) != 11:
        # The parser takes a 10-digit "13…" number for a possible landline and says only
        # "invalid"; the writer meant a mobile and missed or doubled a digit.
        raise ValueError(
            f"{which} has {len(national)} digits after {country}; a mainland mobile number "
            "has 11, such as 138 0013 8000"
        )
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason == ValidationResult.TOO_SHORT:
        raise ValueError(f"{which} has too few digits for a {country} number; {_EXAMPLE}")
    if reason == ValidationResult.TOO_LONG:
        raise ValueError(f"{which} has too many digits for a {country} number; {_EXAMPLE}")
    if reason != ValidationResult.IS_POSSIBLE:
        raise ValueError(
            f"{which} has the wrong number of digits for a {country} number; {_EXAMPLE}"
        )
    if not phonenumbers.is_valid_number(number):
        raise ValueError(
            f"{which} is not a valid {country} number (no such number range); check the digits"
        )
    kind = phonenumbers.number_type(number)
    if kind not in _MOBILE_TYPES:
        what = _NOT_MOBILE.get(kind, "not a mobile number")
        raise ValueError(
            f"{which} is {what}; text messages reach only mobile phones: give a mobile number"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask(phone: str) -> str:
    """A phone number for logs and messages: ``+8613800138000`` → ``+86138****8000``."""
    masked = mask_phones(phone)
    if masked == phone and len(phone) > 4:
        # mask_phones leaves alone what it does not recognise as a number; hide it anyway.
        return "*" * (len(phone) - 4) + phone[-4:]
    return masked


class Role(StrEnum):
    """Why a person is texted; alerts may address some roles only."""

    VILLAGE_HEAD = "village_head"  # 村（居）委会主任
    GRID_WORKER = "grid_worker"  # 网格员
    DUTY_OFFICER = "duty_officer"  # 值班人员
    RESIDENT = "resident"  # 群众
    OFFICIAL = "official"  # other government staff


_ROLES = frozenset(role.value for role in Role)


def _default_languages() -> list[Language]:
    return ["zh"]


class RecipientIn(BaseModel):
    """One recipient row: ``POST`` item and CSV row (``phone,name,region,role,languages``)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    phone: str
    name: str = Field(min_length=1, max_length=40)
    region: RegionCode
    role: Role
    languages: list[Language] = Field(
        default_factory=_default_languages,
        min_length=1,
        max_length=10,
        description="first is the preferred one; a CSV cell gives 'zh', 'en', 'zh;en' or 'zh en'",
    )
    needs: list[Need] = Field(
        default_factory=list,
        max_length=len(NEEDS),
        description="'text': cannot hear the loudspeaker, texted every alert of their area; "
        "a CSV cell gives 'text' or nothing",
    )

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        return normalize_phone(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # A stray quote in a CSV file can pull a line break and the next row into one cell.
        if _CONTROL.search(value):
            raise ValueError("the name contains a line break or control character")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return well_formed_region(value)

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: Any) -> Any:
        # "Village Head" and "village-head" in a spreadsheet mean village_head.
        if isinstance(value, str) and value not in _ROLES:
            return re.sub(r"[\s-]+", "_", value.strip()).lower()
        return value

    @field_validator("languages", mode="before")
    @classmethod
    def _split_languages(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [p.lower() for p in _LANGUAGE_SEPARATORS.split(value) if p]
            # A blank cell is no choice: the default, as when the column is left out.
            return parts or ["zh"]
        if isinstance(value, list):
            return [v.strip().lower() if isinstance(v, str) else v for v in value]
        return value

    @field_validator("languages")
    @classmethod
    def _dedupe_languages(cls, value: list[Language]) -> list[Language]:
        return list(dict.fromkeys(value))

    @field_validator("needs", mode="before")
    @classmethod
    def _needs(cls, value: Any) -> Any:
        return _known_needs(value)


class RecipientCsvIn(RecipientIn):
    """A CSV row: ``needs`` is a cell, ``text`` or blank (several values split like
    ``languages``); in JSON it must be a list, so a mistyped body is not guessed at."""

    @field_validator("needs", mode="before")
    @classmethod
    def _needs(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [p.lower() for p in _LANGUAGE_SEPARATORS.split(value) if p]
        return _known_needs(value)


def _known_needs(value: Any) -> list[str]:
    """``needs`` checked here, not by the ``Literal``: pydantic's "Input should be 'text'"
    names neither the value given nor what it means."""
    if not isinstance(value, list):
        raise ValueError(f"needs must be a list, not {type(value).__name__}; {_NEEDS_HELP}")
    out: list[str] = []
    for item in value:
        need = item.strip().lower() if isinstance(item, str) else item
        if need not in NEEDS:
            shown = repr(item) if len(repr(item)) <= 30 else repr(item)[:27] + "..."
            raise ValueError(f"unknown need {shown}; {_NEEDS_HELP}")
        if need not in out:
            out.append(need)
    return out


@dataclass(frozen=True, slots=True, order=True)
class Posting:
    """Where a person serves and as what; one person may hold several."""

    region: str
    role: Role


@dataclass(slots=True)
class Person:
    """One mobile number and everything known about its holder; postings sorted, unique."""

    phone: str  # E.164
    name: str
    languages: list[Language]  # the first is preferred
    postings: list[Posting] = field(default_factory=list)
    needs: list[Need] = field(default_factory=list)  # sorted, unique

    def __post_init__(self) -> None:
        self.postings = sorted(set(self.postings))
        self.needs = sorted(set(self.needs))

    @property
    def needs_text(self) -> bool:
        """Cannot hear the loudspeaker: texted every alert of their area."""
        return NEEDS_TEXT in self.needs

    @property
    def key(self) -> str:
        """The number's short key, for Redis keys and logs."""
        return recipient_key(self.phone)

    @property
    def language(self) -> Language:
        """The preferred language."""
        return self.languages[0] if self.languages else "zh"

    def to_dict(self) -> dict[str, Any]:
        """What ``to_json`` writes, as a dict. ``needs`` only when there are some: the record
        of a person without needs stays what it was before the field existed, so importing
        the same list again still counts them unchanged."""
        out: dict[str, Any] = {
            "phone": self.phone,
            "name": self.name,
            "languages": list(self.languages),
            "postings": [[p.region, p.role.value] for p in self.postings],
        }
        if self.needs:
            out["needs"] = list(self.needs)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> Person:
        """Read what ``to_json`` wrote; ValueError (without the number) if it is not that."""
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"not a stored recipient: not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise ValueError("not a stored recipient: not a JSON object")
        phone, name = obj.get("phone"), obj.get("name")
        languages, postings = obj.get("languages"), obj.get("postings")
        # Records written before ``needs`` existed have none.
        needs = obj.get("needs", [])
        if not (isinstance(phone, str) and phone.startswith("+") and phone[1:].isdigit()):
            raise ValueError("not a stored recipient: 'phone' is not an E.164 number")
        if not isinstance(name, str):
            raise ValueError("not a stored recipient: 'name' is not a string")
        if not (
            isinstance(languages, list) and languages and all(x in LANGUAGES for x in languages)
        ):
            raise ValueError(f"not a stored recipient: 'languages' is not a list of {LANGUAGES}")
        if not isinstance(postings, list):
            raise ValueError("not a stored recipient: 'postings' is not a list")
        if not (isinstance(needs, list) and all(x in NEEDS for x in needs)):
            raise ValueError(f"not a stored recipient: 'needs' is not a list of {NEEDS}")
        parsed: list[Posting] = []
        for posting in postings:
            if not (
                isinstance(posting, list)
                and len(posting) == 2
                and isinstance(posting[0], str)
                and _REGION_CODE.match(posting[0])
                and posting[1] in _ROLES
            ):
                raise ValueError(f"not a stored recipient: bad posting {posting!r}")
            parsed.append(Posting(posting[0], Role(posting[1])))
        return cls(
            phone=phone, name=name, languages=list(languages), postings=parsed, needs=list(needs)
        )


class RecipientRow(NamedTuple):
    """A checked recipient row (``RecipientIn`` made plain, cheap between processes)."""

    phone: str  # E.164
    name: str
    region: str
    role: str
    languages: tuple[Language, ...]
    needs: tuple[Need, ...] = ()


def _plain(recipient: RecipientIn) -> RecipientRow:
    return RecipientRow(
        recipient.phone,
        recipient.name,
        recipient.region,
        recipient.role.value,
        tuple(recipient.languages),
        tuple(recipient.needs),
    )


def check_recipient_rows(
    items: Sequence[Any],
    tree: RegionTree,
    *,
    row_label: str,
    row_numbers: Sequence[int],
    csv: bool = False,
) -> list[Checked[RecipientRow]]:
    """Each row validated on its own (``merge_recipients`` takes it from there): the costly
    part of an import, which any slice of the rows can go through in another process.
    ``csv``: the rows are a CSV file's (``RecipientCsvIn``), not a JSON body's."""
    return check_rows(
        items,
        RecipientCsvIn if csv else RecipientIn,
        _plain,
        lambda row: region_problem(tree, row.region),
        row_label=row_label,
        row_numbers=row_numbers,
    )


@dataclass(slots=True)
class _Seen:
    row: int
    name: str
    languages: tuple[Language, ...]
    postings: list[Posting]
    needs: set[Need]


def merge_recipients(checked: Sequence[Checked[RecipientRow]], *, row_label: str) -> list[Person]:
    """The persons of checked rows, in order: rows with one phone number merge into one
    person with all their postings, and must agree on the name and the languages. Their
    ``needs`` are joined: a person who cannot hear, said so on one row of a spreadsheet,
    cannot hear whatever the other rows leave blank. Every bad row is reported, and nothing
    is returned if one is bad."""
    seen: dict[str, _Seen] = {}

    def accept(recipient: RecipientRow, row: int) -> dict[str, Any] | None:
        posting = Posting(recipient.region, Role(recipient.role))
        first = seen.get(recipient.phone)
        if first is None:
            seen[recipient.phone] = _Seen(
                row, recipient.name, recipient.languages, [posting], set(recipient.needs)
            )
            return None
        who = f"{mask(recipient.phone)} is also at {row_label} {first.row}"
        if recipient.name != first.name:
            return {
                "field": "name",
                "message": f"{who} as {first.name!r}, here as {recipient.name!r}; "
                "one number is one person: correct the name or the number",
                "type": "conflict",
            }
        if recipient.languages != first.languages:
            return {
                "field": "languages",
                "message": f"{who} with languages {';'.join(first.languages)}, here "
                f"{';'.join(recipient.languages)}; give one person the same languages "
                "on every row",
                "type": "conflict",
            }
        first.postings.append(posting)
        first.needs.update(recipient.needs)
        return None

    # The persons are what ``accept`` merged into ``seen``, not the rows it accepted.
    accept_rows(checked, accept, row_label=row_label)
    return [
        Person(
            phone=phone,
            name=s.name,
            languages=list(s.languages),
            postings=s.postings,
            needs=sorted(s.needs),
        )
        for phone, s in seen.items()
    ]


SHAPE = '[{"phone", "name", "region", "role", "languages", "needs"}]'


def parse_recipients(
    items: Any,
    tree: RegionTree,
    *,
    row_label: str = "item",
    row_numbers: Sequence[int] | None = None,
    max_items: int = MAX_RECIPIENTS_PER_REQUEST,
    csv: bool = False,
) -> list[Person]:
    """Validate a whole list into persons (``check_recipient_rows``, then
    ``merge_recipients``); every bad row is reported, and nothing is returned if one is bad.
    ``csv``: the rows are a CSV file's (``read_csv_rows``)."""
    items = check_shape(items, noun="recipient", shape=SHAPE, max_items=max_items)
    numbers = row_numbers if row_numbers is not None else range(len(items))
    checked = check_recipient_rows(items, tree, row_label=row_label, row_numbers=numbers, csv=csv)
    return merge_recipients(checked, row_label=row_label)


def persons_in(
    persons: Iterable[Person],
    areas: Iterable[str],
    tree: RegionTree,
    roles: Collection[Role] | None = None,
) -> list[Person]:
    """The persons with a posting inside one of ``areas`` (and, given ``roles``, in one of
    them), each once, in the order given. Unknown or malformed areas raise ``RegionError``."""
    if isinstance(areas, str) or isinstance(roles, str):
        # A bare string would iterate as characters and match nothing, silently.
        raise TypeError("persons_in() takes collections of areas and roles, not one string")
    wanted = {tree.get(code).code for code in areas}
    chosen: dict[str, Person] = {}
    for person in persons:
        if person.phone in chosen:
            continue  # read from two region indexes: still one message
        for posting in person.postings:
            if roles is not None and posting.role not in roles:
                continue
            if _within(posting.region, wanted):
                chosen[person.phone] = person
                break
    return list(chosen.values())


def _within(region: str, areas: set[str]) -> bool:
    # tree.is_within's rule (codes nest by prefix) at one set look-up per level instead of one
    # call per area; a posting whose village has left the tree since the import still lies in
    # its township and county, and in a warning it is better to reach it than to drop it.
    try:
        return any(code in areas for code in code_path(region))
    except MalformedRegionCode:
        return False
