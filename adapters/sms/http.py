"""HTTP plumbing every gateway adapter shares: one ``aiohttp`` session per adapter and the one
place where a network failure is sorted into "the gateway did not take it" (``RETRY``) or "we
cannot know" (``UNKNOWN``), plus small helpers for answers, headers and JSON bodies."""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import aiohttp
import structlog

from adapters.sms.gateway import (
    Message,
    SubmitResult,
    SubmitStatus,
)
from adapters.sms.settings import GatewaySettings
from dispatcher.core.masking import mask_phones

log = structlog.get_logger(__name__)

# Enough of a gateway's error page to recognise it, not so much that logs fill with HTML.
_ERROR_TEXT_LIMIT: Final = 300


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """What came back; ``body`` is None when the status line came but the body did not."""

    status: int
    headers: Mapping[str, str]
    body: bytes | None


@dataclass(frozen=True, slots=True)
class HttpFailure:
    """No answer. ``RETRY``: the request never left; ``UNKNOWN``: it may have arrived."""

    status: SubmitStatus
    error: str


def error_text(answer: HttpAnswer, detail: str | None = None) -> str:
    """A short, phone-masked description of an answer for a result or a log line."""
    if detail is None:
        raw = (answer.body or b"").decode("utf-8", "replace").strip()
        detail = raw[:_ERROR_TEXT_LIMIT]
    return mask_phones(f"HTTP {answer.status}" + (f": {detail}" if detail else ""))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: decimal seconds or an HTTP date; None if absent
    or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def get_header(headers: Mapping[str, str], name: str) -> str | None:
    # aiohttp's headers are case-insensitive, a plain dict from a caller is not.
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def signature_matches(expected: str, given: str) -> bool:
    """Whether a receipt's signature header is ``expected``, compared in constant time. A
    header holding bytes that are not ASCII (aiohttp hands them on as surrogate escapes, which
    cannot be encoded) is no signature this engine computed, so it does not match."""
    given = given.strip()
    return given.isascii() and hmac.compare_digest(expected.encode(), given.encode())


def decode_json(body: bytes | None) -> Any:
    """The decoded JSON body, or None if there is none or it is not JSON."""
    if body is None:
        return None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None


class HttpGateway:
    """Session handling and failure sorting shared by the HTTP adapters.

    ``connect_timeout`` bounds connecting (and waiting for a pooled connection): when it runs
    out nothing was sent, so it is a ``RETRY``. ``timeout`` bounds waiting for the answer:
    when it runs out the gateway may have the batch, so it is ``UNKNOWN``.
    """

    def __init__(self, settings: GatewaySettings, callback_url: str | None = None) -> None:
        self.name = settings.name
        self.settings = settings
        self.callback_url = callback_url
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        s = self.settings
        timeout = aiohttp.ClientTimeout(
            total=s.connect_timeout + s.timeout,
            connect=s.connect_timeout,
            sock_connect=s.connect_timeout,
            sock_read=s.timeout,
        )
        # The engine caps requests in flight at `concurrency`; the head room is for lookups,
        # so a status query never makes a submit wait for a connection.
        connector = aiohttp.TCPConnector(limit=2 * s.concurrency + 4)
        self._session = aiohttp.ClientSession(
            timeout=timeout, connector=connector, headers=self._default_headers()
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _default_headers(self) -> dict[str, str]:
        return {}

    async def _exchange(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        data: Mapping[str, str] | None = None,
        params: Sequence[tuple[str, str]] | None = None,
    ) -> HttpAnswer | HttpFailure:
        """One HTTP request; every network failure comes back as an ``HttpFailure``."""
        if self._session is None:
            raise RuntimeError(f"gateway {self.name}: start() was not called")
        try:
            async with self._session.request(
                method,
                url,
                json=json_body,
                data=data,
                params=params,
                # A redirect means a wrong URL; following it would turn a POST into a GET.
                allow_redirects=False,
            ) as response:
                return await _read_answer(response)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Raised before a byte of the request was written.
            return HttpFailure(SubmitStatus.RETRY, f"no connection: {type(exc).__name__}: {exc}")
        except aiohttp.InvalidURL as exc:
            return HttpFailure(SubmitStatus.REJECTED, f"invalid URL: {exc}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            return HttpFailure(SubmitStatus.UNKNOWN, f"no answer: {type(exc).__name__}: {exc}")


async def _read_answer(response: aiohttp.ClientResponse) -> HttpAnswer:
    """The answer; a body that breaks off still leaves the status line, which may be enough
    (a 503 is a 503), so only the body is given up."""
    try:
        body: bytes | None = await response.read()
    except (TimeoutError, aiohttp.ClientError):
        body = None
    return HttpAnswer(response.status, response.headers, body)


def results_for_all(
    messages: Iterable[Message],
    status: SubmitStatus,
    *,
    error: str | None = None,
    retry_after: float | None = None,
) -> list[SubmitResult]:
    return [SubmitResult(m.out_id, status, error=error, retry_after=retry_after) for m in messages]


def log_submit(gateway: str, results: Sequence[SubmitResult]) -> None:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status.value] = counts.get(result.status.value, 0) + 1
    if counts.keys() <= {SubmitStatus.ACCEPTED.value}:
        log.debug("sms.gateway.submitted", gateway=gateway, **counts)
        return
    errors = sorted({r.error for r in results if r.error})
    log.warning("sms.gateway.submitted", gateway=gateway, errors=errors[:3], **counts)
