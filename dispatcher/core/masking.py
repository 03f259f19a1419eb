"""Phone numbers and secrets masked wherever text may reach a log line, an error or a report."""

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


# A URL's password (mqtts://ebd:s3cret@broker, redis://:s3cret@redis), a bearer token, and
# key=value or JSON pairs whose key says they hold a secret. Applied to every log line, so a
# URL or header logged by a library, or a traceback quoting one, gives nothing away.
_URL_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@/\s]+)(?=@)", re.I
)
_BEARER = re.compile(r"(?P<head>\bBearer\s+)(?P<secret>[A-Za-z0-9._~+/=-]+)", re.I)
_PAIR = re.compile(
    r"(?P<head>[\"']?\b(?:password|passwd|pass|secret|token|api_key|access_key_secret|"
    r"requirepass|private_key)[\"']?\s*[=:]\s*[\"']?)(?P<secret>[^\s\"',;&}]+)",
    re.I,
)
SECRET_MASK = "***"  # noqa: S105  the mask, not a secret


def mask_secrets(text: str) -> str:
    """``mqtt://ebd:pw@host`` → ``mqtt://ebd:***@host``; ``Bearer abc`` → ``Bearer ***``;
    ``password=abc`` → ``password=***``."""
    for pattern in (_URL_PASSWORD, _BEARER, _PAIR):
        text = pattern.sub(lambda m: m.group("head") + SECRET_MASK, text)
    return text


def mask(text: str) -> str:
    """Phones and secrets both masked: what every log line goes through."""
    return mask_secrets(mask_phones(text))
