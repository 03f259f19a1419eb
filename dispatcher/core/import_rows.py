"""Checking an import's rows in two steps, so the costly one can run in other processes.

``check_rows`` validates each row on its own (the model, then a check such as "the region
exists") and gives each as a plain tuple, cheap to send between processes; any slice of a list
can be checked anywhere. ``accept_rows`` then walks every row in order in one place, with what
needs all the rows before it (the same terminal twice, one phone number on two rows), and
refuses the whole list if any row is bad, as ``dispatcher.core.validation.parse_rows`` does:
the same details, in the same order. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from dispatcher.core.errors import ValidationFailed
from dispatcher.core.validation import refuse_rows, validation_details

Model = TypeVar("Model", bound=BaseModel)
Plain = TypeVar("Plain")
Accepted = TypeVar("Accepted")


class Checked(NamedTuple, Generic[Plain]):
    """One row after ``check_rows``: its number, and its value or what is wrong with it. A
    tuple: 100,000 of them come back from the checking processes, and a tuple unpickles in C
    where a dataclass runs Python for each (0.4 s of the event loop's process for 100,000)."""

    row: int
    value: Plain | None
    errors: list[dict[str, Any]]


def check_shape(items: Any, *, noun: str, shape: str, max_items: int) -> list[Any]:
    """The list of an import body, or ``ValidationFailed`` saying what to send instead."""
    if not isinstance(items, list):
        raise ValidationFailed(f"send a JSON list of {noun}s: {shape}")
    if not items:
        raise ValidationFailed(f"the {noun} list is empty")
    if len(items) > max_items:
        raise ValidationFailed(f"at most {max_items} {noun}s per request; send them in parts")
    return items


def check_rows(
    items: Sequence[Any],
    model: type[Model],
    plain: Callable[[Model], Plain],
    check: Callable[[Plain], dict[str, Any] | None],
    *,
    row_label: str,
    row_numbers: Sequence[int],
) -> list[Checked[Plain]]:
    """Each of ``items`` validated into ``model``, made ``plain`` and ``check``ed on its own;
    ``row_numbers[i]`` is the number errors give item ``i``."""
    out: list[Checked[Plain]] = []
    for item, row in zip(items, row_numbers, strict=True):
        try:
            value = plain(model.model_validate(item))
        except ValidationError as exc:
            out.append(Checked(row, None, [{row_label: row, **d} for d in validation_details(exc)]))
            continue
        problem = check(value)
        if problem is None:
            out.append(Checked(row, value, []))
        else:
            out.append(Checked(row, None, [{row_label: row, **problem}]))
    return out


def accept_rows(
    checked: Sequence[Checked[Plain]],
    accept: Callable[[Plain, int], dict[str, Any] | None],
    *,
    row_label: str,
) -> list[Plain]:
    """The rows ``accept`` (seeing each good row in order, with its number) took; nothing,
    and ``ValidationFailed`` with every problem, if one row is bad."""
    errors: list[dict[str, Any]] = []
    accepted: list[Plain] = []
    for entry in checked:
        if entry.value is None:
            errors.extend(entry.errors)
            continue
        problem = accept(entry.value, entry.row)
        if problem is None:
            accepted.append(entry.value)
        else:
            errors.append({row_label: entry.row, **problem})
    refuse_rows(errors, row_label)
    return accepted
