"""Structured logging set up once: JSON when not a TTY, readable on a terminal, phones masked."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

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


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_phones(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    return value


def _mask_processor(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    for key, value in event.items():
        event[key] = _masked(value)
    return event


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto", level: str = "info"
) -> None:
    """Configure structlog (and the stdlib loggers of libraries) for the whole process."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Tracebacks become text before masking, so a phone inside one is masked too.
        structlog.processors.format_exc_info,
    ]
    renderer: Any
    if use_json:
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    else:
        renderer = structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, _mask_processor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(message)s")
