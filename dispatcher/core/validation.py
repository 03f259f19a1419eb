"""Turning pydantic's validation errors into the API's error details, for a body and for a
list of rows (API items or CSV lines). Pure: the API, the CLI and the adapters share it."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from dispatcher.core.errors import ValidationFailed

# A list with thousands of bad rows is reported by its first ones: enough to see the pattern.
MAX_ROW_DETAILS = 200


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
