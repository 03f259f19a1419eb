"""The one HTTP client of the CLI: the engine's API at ``--api`` with the office's token."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp

from dispatcher.core.errors import ServiceError, ValidationFailed

TIMEOUT = aiohttp.ClientTimeout(total=120)
# An export may take long as a whole; only a stall is an error.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)


NO_CREDENTIAL_HELP = (
    "give the office token in the EBD_TOKEN environment variable or with --token-file FILE "
    "(a file holding only the token)"
)


def office_token(token_file: str | None) -> str:
    """The token in ``token_file`` if given, else in ``EBD_TOKEN``; ``ValidationFailed``
    saying both ways when there is none."""
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationFailed(
                f"cannot read the token file {token_file}: {getattr(exc, 'strerror', exc)}; "
                + NO_CREDENTIAL_HELP
            ) from exc
        if not token:
            raise ValidationFailed(f"the token file {token_file} is empty; " + NO_CREDENTIAL_HELP)
        return token
    token = os.environ.get("EBD_TOKEN", "").strip()
    if not token:
        raise ValidationFailed(NO_CREDENTIAL_HELP)
    return token


class ApiClient:
    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self._token = token

    @classmethod
    def of(cls, args: argparse.Namespace) -> ApiClient:
        """The client a command's ``--api`` and ``--token-file`` (or ``EBD_TOKEN``) name.

        There is no ``--token``: a token on the command line shows in the process list."""
        return cls(args.api, office_token(getattr(args, "token_file", None)))

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer of ``method path``; ``ValidationFailed`` with the engine's message
        if it refused, ``ServiceError`` if it could not be reached."""
        status, text = asyncio.run(self._request(method, path, body))
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise self._unreachable(exc) from exc
        if status >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise ValidationFailed(
                f"the engine refused it ({status}): {error.get('message', data)}",
                details=error.get("details"),
            )
        return data

    def text(self, path: str) -> str:
        """A GET whose answer is text (CSV), as it comes."""
        status, text = asyncio.run(self._request("GET", path, None))
        if status >= 400:
            try:
                message = json.loads(text)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = text[:300]
            raise ValidationFailed(f"the engine refused it ({status}): {message}")
        return text

    def save(self, path: str, out: BinaryIO) -> int:
        """A GET whose answer is streamed into ``out`` as it comes (an export too large to
        hold); the bytes written."""
        return asyncio.run(self._save(path, out))

    async def _save(self, path: str, out: BinaryIO) -> int:
        written = 0
        try:
            async with (
                aiohttp.ClientSession(timeout=STREAM_TIMEOUT) as session,
                session.get(
                    self.base + path, headers={"Authorization": f"Bearer {self._token}"}
                ) as response,
            ):
                if response.status >= 400:
                    text = await response.text()
                    try:
                        message = json.loads(text)["error"]["message"]
                    except (ValueError, KeyError, TypeError):
                        message = text[:300]
                    raise ValidationFailed(f"the engine refused it ({response.status}): {message}")
                async for chunk in response.content.iter_chunked(1 << 16):
                    out.write(chunk)
                    written += len(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        return written

    async def _request(self, method: str, path: str, body: Any) -> tuple[int, str]:
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as session,
                session.request(
                    method,
                    self.base + path,
                    json=body,
                    headers={"Authorization": f"Bearer {self._token}"},
                ) as response,
            ):
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: Exception) -> ServiceError:
        return ServiceError(
            f"cannot reach the engine at {self.base}: {exc or type(exc).__name__}; "
            "is `ebd serve` running there (see --api)?"
        )
