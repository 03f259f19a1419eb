"""Turning pydantic's validation errors into the API's error details, for a body and for a
list of rows (API items or CSV lines), and validating such a list whole (``parse_rows``).
Pure: the API, the CLI and the adapters share it."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from dispatcher.core.errors import RegionError, ValidationFailed
from dispatcher.core.regions import RegionTree

Row = TypeVar("Row", bound=BaseModel)

# A list with thousands of bad rows is reported by its first ones: enough to see the pattern.
MAX_ROW_DETAILS = 200

# What a loudspeaker cannot say in a spoken text: emoji and pictographs (and the selectors,
# joiners, keycaps and tags emoji are built from), and invisible format, private-use and
# unassigned characters. A synthesiser reads an emoji out by its name or stalls on it, in the
# middle of a warning. ℃, °, ㎜, ①, arrows and ■ stay allowed: warnings use them. The terminal
# side strips the same set before speaking (``receiver.speech``), for an engine that let one by.
_PICTOGRAPH = re.compile(
    "[\u231a\u231b\u23e9-\u23fa\u2600-\u27bf\u2b00-\u2bff\u3030\u303d"
    "\u3297-\u3299\ufe00-\ufe0f\U0001f000-\U0001faff\U000e0000-\U000e007f"
    "\U000e0100-\U000e01ef]"
)
_INVISIBLE = frozenset({"Cf", "Co", "Cn", "Cs"})


def speakable(value: str | None) -> str | None:
    """A spoken text's check (headline, text, instruction): nothing a loudspeaker cannot say;
    the error names the first such character, as U+XXXX with its Unicode name."""
    if value is None:
        return None
    for index, ch in enumerate(value):
        if _PICTOGRAPH.match(ch) or unicodedata.category(ch) in _INVISIBLE:
            name = unicodedata.name(ch, "unassigned or private use").lower()
            raise ValueError(
                f"contains U+{ord(ch):04X} ({name}) at position {index}, which a loudspeaker "
                "cannot say; remove it or write it out in words"
            )
    return value


def validation_details(exc: ValidationError, *, prefix: str = "") -> list[dict[str, Any]]:
    out = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in error["loc"])
        out.append(
            {
                "field": f"{prefix}{loc}" if loc else prefix.rstrip(".") or "body",
                "message": error["msg"].removeprefix("Value error, "),
                "type": error["type"],
            }
        )
    return out


def invalid(exc: ValidationError, *, prefix: str = "") -> ValidationFailed:
    details = validation_details(exc, prefix=prefix)
    first = details[0]
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return ValidationFailed(f"{first['field']}: {first['message']}{more}", details=details)


def refuse_rows(errors: list[dict[str, Any]], row_label: str) -> None:
    """Raise for a list import with bad rows: how many, the first, and nothing imported."""
    if not errors:
        return
    first = errors[0]
    raise ValidationFailed(
        f"{len(errors)} bad {row_label}(s); nothing was imported. First: "
        f"{row_label} {first[row_label]}, {first['field']}: {first['message']}",
        details=errors[:MAX_ROW_DETAILS],
    )


def parse_rows(
    items: Any,
    model: type[Row],
    accept: Callable[[Row, int], dict[str, Any] | None],
    *,
    noun: str,
    shape: str,
    max_items: int,
    row_label: str = "item",
    row_numbers: Sequence[int] | None = None,
) -> list[Row]:
    """Validate a whole list of ``noun`` rows (API items or CSV lines) into ``model``s: every
    bad row is reported, and nothing is returned if one is bad (``refuse_rows``).

    ``accept`` sees each row that validated, with its number (``row_numbers[index]``, else its
    index), and returns the problem that rules it out (``field``, ``message``, ``type``) or
    None; it is where a row is checked against the tree and the rows before it. The rows it
    accepted come back in order. ``shape`` shows a row, for a body that is not a list.
    """
    if not isinstance(items, list):
        raise ValidationFailed(f"send a JSON list of {noun}s: {shape}")
    if not items:
        raise ValidationFailed(f"the {noun} list is empty")
    if len(items) > max_items:
        raise ValidationFailed(f"at most {max_items} {noun}s per request; send them in parts")
    errors: list[dict[str, Any]] = []
    accepted: list[Row] = []
    for index, item in enumerate(items):
        row = row_numbers[index] if row_numbers is not None else index
        try:
            parsed = model.model_validate(item)
        except ValidationError as exc:
            errors.extend({row_label: row, **d} for d in validation_details(exc))
            continue
        problem = accept(parsed, row)
        if problem is None:
            accepted.append(parsed)
        else:
            errors.append({row_label: row, **problem})
    refuse_rows(errors, row_label)
    return accepted


def region_problem(tree: RegionTree, code: str) -> dict[str, Any] | None:
    """The row problem (as ``parse_rows`` takes it) of a region code the tree refuses, or None
    if the tree has it."""
    try:
        tree.get(code)
    except RegionError as exc:
        return {"field": "region", "message": exc.message, "type": exc.code}
    return None
