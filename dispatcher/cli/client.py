"""The one HTTP client of the CLI: the engine's API with the office's token, and the address
it is found at (``--api``, else ``EBD_API``, else the ``[api] listen`` of ``--config``, else
``EBD_API__LISTEN``, else http://127.0.0.1:8080).

What goes wrong becomes one of two errors, each with the exit code ``ebd`` ends with:
``EngineUnreachable`` (3: no answer, or the engine failed, 5xx) and ``EngineRefused`` (by the
engine's status: 401 → 4, 403 → 5, 404 → 6, any other refusal such as 400/409/422 → 2, the
code of every other bad input).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Final
from urllib.parse import urlsplit

import aiohttp

from dispatcher.core.config import ApiSettings
from dispatcher.core.errors import ServiceError, ValidationFailed

DEFAULT_API = "http://127.0.0.1:8080"
TIMEOUT = aiohttp.ClientTimeout(total=120)
# An export may take long as a whole; only a stall is an error.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)


NO_CREDENTIAL_HELP = (
    "give the office token in the EBD_TOKEN environment variable or with --token-file FILE "
    "(a file holding only the token)"
)


def refusing(message: Callable[[], str]) -> type[argparse.Action]:
    """An option that only refuses, with ``message()`` (called then, so that it speaks the
    language chosen by then): a secret given on the command line
    would show in the process list, and a removed option must say what replaces it rather
    than be read as an abbreviation of another."""

    class Refuse(argparse.Action):
        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: Any,
            option_string: str | None = None,
        ) -> None:
            parser.error(message())

    return Refuse


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


def _listen_url(listen: str) -> str:
    """The URL a client on this machine reaches an engine listening on ``listen`` at: a
    wildcard address is reached on loopback."""
    settings = ApiSettings(listen=listen)
    wildcards = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104  mapped away, not bound
    host = wildcards.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    # The engine serves plain HTTP (TLS, when wanted, is a proxy's job in front of it).
    return f"http://{host}:{settings.port}"


def _checked_url(url: str, where: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed(
            f"{where} must be the engine's URL, e.g. http://127.0.0.1:8080; got {url!r}"
        )
    return url.strip().rstrip("/")


def api_base(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str:
    """The engine's URL for a command: ``--api``, else ``EBD_API``, else the ``[api] listen``
    of the ``--config`` file (with the ``EBD_`` variables the engine itself would apply),
    else ``EBD_API__LISTEN``, else the engine's default address."""
    env = os.environ if env is None else env
    if getattr(args, "api", None):
        return _checked_url(args.api, "--api")
    if env.get("EBD_API", "").strip():
        return _checked_url(env["EBD_API"], "EBD_API")
    if getattr(args, "config", None):
        from dispatcher.settings import load_settings

        return _listen_url(load_settings(Path(args.config)).api.listen)
    if env.get("EBD_API__LISTEN", "").strip():
        try:
            return _listen_url(env["EBD_API__LISTEN"].strip())
        except ValueError as exc:
            raise ValidationFailed(
                f"EBD_API__LISTEN must be HOST:PORT, e.g. 127.0.0.1:8080; got "
                f"{env['EBD_API__LISTEN']!r}"
            ) from exc
    return DEFAULT_API


class EngineUnreachable(ServiceError):
    """No answer from the engine, or it failed (5xx): maybe retry later."""

    exit_code = 3


_REFUSAL_EXIT_CODES: Final = {401: 4, 403: 5, 404: 6}
_REFUSAL_HINTS: Final = {
    401: "; check the office token (EBD_TOKEN or --token-file)",
    403: "; it is outside this office's jurisdiction or its alerts",
    404: "; check the id (`ebd alerts list` shows the office's alerts)",
}


class EngineRefused(ValidationFailed):
    """The engine answered with a refusal; ``http_status`` says which."""

    def __init__(self, http_status: int, message: str, details: Any = None) -> None:
        hint = _REFUSAL_HINTS.get(http_status, "")
        super().__init__(f"the engine refused it ({http_status}): {message}{hint}", details=details)
        self.http_status = http_status

    @property
    def exit_code(self) -> int:
        return _REFUSAL_EXIT_CODES.get(self.http_status, 2)


def exit_code(exc: Exception) -> int:
    """The exit code ``ebd`` ends with for an error: 2 unless the error names another."""
    code = getattr(exc, "exit_code", 2)
    return code if isinstance(code, int) else 2


def _refusal(status: int, text: str) -> EngineRefused | EngineUnreachable:
    """The error an answer with ``status`` >= 400 and body ``text`` stands for."""
    try:
        error = json.loads(text)["error"]
        message, details = str(error["message"]), error.get("details")
    except (ValueError, KeyError, TypeError):
        message, details = text[:300], None
    if status >= 500:
        return EngineUnreachable(
            f"the engine failed ({status}): {message}; try again, or see its logs"
        )
    return EngineRefused(status, message, details)


# Connection failures are retried this many times more, a little later each time, when the
# request may safely be repeated (a GET, or a POST with an Idempotency-Key).
RETRIES = 2
RETRY_DELAY = 0.5


class ApiClient:
    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self._token = token

    @classmethod
    def of(cls, args: argparse.Namespace) -> ApiClient:
        """The client for a command's address (``api_base``) and ``--token-file`` (or
        ``EBD_TOKEN``).

        There is no ``--token``: a token on the command line shows in the process list."""
        return cls(api_base(args), office_token(getattr(args, "token_file", None)))

    def call(
        self, method: str, path: str, body: Any = None, *, headers: Mapping[str, str] | None = None
    ) -> Any:
        """The JSON answer of ``method path``; ``EngineRefused`` with the engine's message
        if it refused, ``EngineUnreachable`` if it could not be reached."""
        return asyncio.run(self.fetch(method, path, body, headers=headers))

    async def fetch(
        self, method: str, path: str, body: Any = None, *, headers: Mapping[str, str] | None = None
    ) -> Any:
        """``call`` for a caller already in an event loop. A GET, or a request with an
        ``Idempotency-Key``, is sent again after a connection failure."""
        headers = headers or {}
        repeatable = method == "GET" or "Idempotency-Key" in headers
        attempt = 0
        while True:
            try:
                status, text = await self._request(method, path, body, headers)
                break
            except EngineUnreachable:
                if not repeatable or attempt >= RETRIES:
                    raise
                attempt += 1
                await asyncio.sleep(RETRY_DELAY * attempt)
        if status >= 400:
            raise _refusal(status, text)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise self._unreachable(exc) from exc

    def text(self, path: str) -> str:
        """A GET whose answer is text (CSV), as it comes."""
        status, text = asyncio.run(self._request("GET", path, None))
        if status >= 400:
            raise _refusal(status, text)
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
                    raise _refusal(response.status, await response.text())
                async for chunk in response.content.iter_chunked(1 << 16):
                    out.write(chunk)
                    written += len(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        return written

    async def _request(
        self, method: str, path: str, body: Any, headers: Mapping[str, str] | None = None
    ) -> tuple[int, str]:
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as session,
                session.request(
                    method,
                    self.base + path,
                    json=body,
                    headers={**(headers or {}), "Authorization": f"Bearer {self._token}"},
                ) as response,
            ):
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: Exception) -> EngineUnreachable:
        return EngineUnreachable(
            f"cannot reach the engine at {self.base}: {exc or type(exc).__name__}; "
            "is `ebd serve` running there? (the address comes from --api, EBD_API or the "
            "[api] listen of --config)"
        )
