"""The one HTTP client of the CLI: the engine's API at ``--api`` with the office's token."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

import aiohttp

from dispatcher.core.errors import ServiceError, ValidationFailed

TIMEOUT = aiohttp.ClientTimeout(total=120)


class ApiClient:
    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self._token = token

    @classmethod
    def of(cls, args: argparse.Namespace) -> ApiClient:
        """The client a command's ``--api`` and ``--token`` (or ``EBD_TOKEN``) name.

        ``--token`` shows in the process list; the variable does not, so prefer it."""
        token: str | None = args.token or os.environ.get("EBD_TOKEN")
        if not token:
            raise ValidationFailed("give the office token with --token or the EBD_TOKEN variable")
        return cls(args.api, token)

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
