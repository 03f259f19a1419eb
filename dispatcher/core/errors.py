"""The engine's exception tree; every error the engine raises on purpose is one of these.

    EbdError                      base; ``code`` is the API error code, ``status`` its HTTP status
    ├── ConfigError               a config or data file is wrong (``path``, ``field``, ``line``)
    │   └── RegionFileError       a region file row is wrong
    ├── RegionError               a region code is wrong (``region_code``)
    │   ├── MalformedRegionCode   not 2/4/6/9/12 digits
    │   └── UnknownRegion         well-formed but not in the loaded tree
    ├── BadRequest                the request is not readable (e.g. not JSON)
    │   └── ReceiptMalformed      an authentic SMS receipt callback that cannot be read
    ├── ValidationFailed          input failed validation (``details``: list of problems)
    │   ├── IdempotencyKeyReused  the key was used before with another body
    │   ├── ImportFailed          a CSV/JSON import had bad rows; nothing was imported
    │   ├── NothingToReach        an alert's areas hold no terminal and no SMS recipient
    │   └── PlanError             a drill plan, slot or edit breaks the drill rules
    ├── Unauthorized              missing or unknown bearer token
    │   └── ReceiptRejected       an SMS receipt callback not signed by its gateway
    ├── Forbidden                 outside the office's jurisdiction (``region_codes``)
    ├── NotFound                  no such alert, terminal or region
    ├── Conflict                  the request contradicts stored state (idempotency, cancel)
    ├── PayloadTooLarge           request body over the limit
    ├── UnsupportedMediaType      request body is not JSON
    ├── ServiceError              an embedded mosquitto/redis-server could not be started
    ├── StoreUnavailable          Redis did not answer; the request may be retried
    ├── PublishFailed             the broker did not take a publish in time (``topic``)
    ├── AckLinkError              the broker refused the ack link or broke the protocol
    └── DemoFailed                ``ebd demo`` saw a terminal fail or the simulator exit

The reference receiver (``receiver/``) keeps errors of its own: it runs on terminals without
the engine, and imports nothing of it but the wire contract.

Errors carry data as attributes, and ``details`` is what the API puts in its error body.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar


class EbdError(Exception):
    """Base of every deliberate engine error.

    A subclass names its API code and HTTP status in its class line
    (``class NotFound(EbdError, code="not_found", status=404)``); what it leaves out it
    inherits.
    """

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500

    def __init_subclass__(
        cls, *, code: str | None = None, status: int | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code
        if status is not None:
            cls.status = status

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigError(EbdError, code="bad_config", status=500):
    """A config or data file is wrong; the message names where (path, line, field)."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f", line {line}"
            if field:
                where += f", field '{field}'"
            where += ": "
        elif field:
            where = f"field '{field}': "
        super().__init__(where + message)
        self.path = path
        self.field = field
        self.line = line


class RegionFileError(ConfigError, code="bad_region_file"):
    """A row of a region file is wrong."""


class RegionError(EbdError, code="bad_region", status=422):
    """A region code is wrong (``region_code``)."""

    def __init__(self, message: str, *, region_code: str) -> None:
        super().__init__(message, details={"region_code": region_code})
        self.region_code = region_code


class MalformedRegionCode(RegionError, code="malformed_region_code"):
    """Not 2, 4, 6, 9 or 12 ASCII digits."""

    def __init__(self, region_code: str) -> None:
        super().__init__(
            f"region code {region_code!r} is malformed: a region code is 2, 4, 6, 9 or 12 digits "
            "(province 35, city 3501, county 350102, township 350102001, village 350102001001)",
            region_code=region_code,
        )


class UnknownRegion(RegionError, code="unknown_region"):
    """Well-formed, but not in the loaded region tree."""

    def __init__(self, region_code: str) -> None:
        super().__init__(
            f"region code {region_code!r} is not in the loaded region tree",
            region_code=region_code,
        )


class BadRequest(EbdError, code="bad_request", status=400):
    """The request cannot be read (not JSON, a bad query parameter)."""


class ValidationFailed(EbdError, code="invalid", status=422):
    """The input was read but is not valid; ``details`` lists every problem."""


class IdempotencyKeyReused(ValidationFailed, code="idempotency_key_reused"):
    """The Idempotency-Key was used before with another body."""


class ImportFailed(ValidationFailed, code="import_failed"):
    """A CSV or JSON import had bad rows; nothing of it was imported."""


class NothingToReach(ValidationFailed, code="nothing_to_reach"):
    """The areas resolve to nothing: no registered terminal and no SMS recipient below them."""


class Unauthorized(EbdError, code="unauthorized", status=401):
    """No bearer token, or one no office holds."""


class Forbidden(EbdError, code="forbidden", status=403):
    """Outside the office's jurisdiction (``region_codes``)."""

    def __init__(self, message: str, *, region_codes: list[str] | None = None) -> None:
        super().__init__(message, details={"region_codes": region_codes or []})
        self.region_codes = region_codes or []


class NotFound(EbdError, code="not_found", status=404):
    """No such alert, terminal, region or drill."""


class Conflict(EbdError, code="conflict", status=409):
    """The request contradicts what is stored (a reused key, a cancelled alert)."""


class PayloadTooLarge(EbdError, code="too_large", status=413):
    """The request body is over the limit."""


class UnsupportedMediaType(EbdError, code="unsupported_media_type", status=415):
    """The request body is not JSON."""


class ServiceError(EbdError, code="service_failed", status=500):
    """An embedded mosquitto or redis-server could not be started."""


class StoreUnavailable(EbdError, code="store_unavailable", status=503):
    """Redis did not answer; the request may be retried."""


class StoreRefused(StoreUnavailable, code="store_refused", status=500):
    """Redis answered with an error that is no outage (a script error, a key of the wrong
    type): a bug or a damaged store. The engine's own loops treat it as an outage and try
    again; a caller is not told to retry, and Redis's reply (which may quote a script) is kept
    in ``reply`` for the log, not shown."""

    def __init__(self, reply: str) -> None:
        super().__init__("the store refused the request; the engine logged the details")
        self.reply = reply


class PublishFailed(EbdError, code="publish_failed", status=503):
    """The broker did not accept a publish before its deadline; the outbox will retry it."""

    def __init__(self, message: str, *, topic: str) -> None:
        super().__init__(message, details={"topic": topic})
        self.topic = topic


class ReceiptMalformed(BadRequest):
    """An SMS receipt callback whose signature holds but whose body cannot be read."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"receipt not readable: {reason}")
        self.reason = reason


class ReceiptRejected(Unauthorized):
    """An SMS receipt callback not from its gateway (bad or missing signature, stale time)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"receipt rejected: {reason}")
        self.reason = reason


class PlanError(ValidationFailed):
    """A plan, a slot or a request that breaks the drill rules; the message says which rule and,
    where it helps, what to change."""


class AckLinkError(EbdError, code="ack_link", status=503):
    """The broker refused the ack link's connection or a subscription, or broke the protocol;
    the link reconnects with backoff."""


class DemoFailed(EbdError, code="demo_failed"):
    """``ebd demo`` could not finish: a request failed, the simulator exited, a terminal failed."""
