"""Phone numbers masked wherever text may reach a log line, an error or a report."""

from __future__ import annotations

import re

# Chinese mobile numbers, with or without +86, and any E.164 number: the tail stays visible so
# an operator can still tell two people apart.
_PHONE = re.compile(
    r"(?<!\d)(\+?86)?(1[3-9]\d)(\d{4})(\d{4})(?!\d)|(?<!\d)(\+\d{2,4})(\d{4,10})(\d{3})(?!\d)"
)


def mask_phones(text: str) -> str:
    """``13812345678`` → ``138****5678``; ``+4915112345678`` → ``+4915******678``."""

    def _sub(match: re.Match[str]) -> str:
        if match.group(2):
            return f"{match.group(1) or ''}{match.group(2)}****{match.group(4)}"
        return f"{match.group(5)}{'*' * len(match.group(6))}{match.group(7)}"

    return _PHONE.sub(_sub, text)
