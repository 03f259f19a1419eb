"""Terminals' broker accounts: issued when a terminal is registered, rotated, revoked.

A terminal's password is made here, handed out once, and never stored: Redis keeps the line
of the broker's password file (a salted PBKDF2 hash). Every change rewrites the password file
from Redis, has the broker reread it (SIGHUP, which also disconnects revoked terminals and
those whose password was rotated) and waits until the broker takes this instance's canary
account, so a password handed out works by the time the caller has it.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from dispatcher.core.broker_auth import CANARY_USER
from dispatcher.core.errors import ServiceError
from dispatcher.core.models import utcnow
from dispatcher.store.credentials import Account, CredentialStore, NewAccounts, encode_accounts

log = structlog.get_logger(__name__)

# 24 random bytes: 32 URL-safe characters, typed by nobody, guessed by nobody.
_PASSWORD_BYTES = 24
# PBKDF2 rounds of the accounts issued here (mosquitto's own format, ``$7$``; mosquitto reads
# the rounds from each line, so lines of 101 rounds written before keep working). Rounds make
# each guess at a stolen hash dearer, which protects passwords people choose; these are 192
# random bits, out of reach at any cost per guess. At mosquitto_passwd's 101 rounds, issuing
# 100,000 accounts took 11 s of CPU (docs/benchmarks.md, "Imports"), and the broker paid the
# same again at every reconnect of them all.
ISSUE_ROUNDS = 1
_SALT_BYTES = 12
_PROBE_INTERVAL = 0.05

Reload = Callable[[], Awaitable[None]]
# Whether the broker takes (user, password) on the terminals' listener right now.
Accepts = Callable[[str, str], Awaitable[bool]]


def account_line(user: str, password: str) -> str:
    """A password-file line for a terminal's account (``password_line`` at ``ISSUE_ROUNDS``)."""
    if ":" in user or "\n" in user or "\n" in password:
        raise ValueError("a broker user name holds no ':' and neither it nor a password a newline")
    salt = os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ISSUE_ROUNDS)
    encoded = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"{user}:$7${ISSUE_ROUNDS}${encoded[0]}${encoded[1]}"


def _new_accounts(
    ids: Sequence[str], issued_at: str, by: str
) -> tuple[dict[str, str], dict[str, str]]:
    """New passwords for ``ids`` and their accounts' stored form (``encode_accounts``)."""
    passwords = {terminal: secrets.token_urlsafe(_PASSWORD_BYTES) for terminal in ids}
    accounts = [Account(t, account_line(t, p), issued_at, by) for t, p in passwords.items()]
    return passwords, encode_accounts(accounts)


def _keep(
    keep: Callable[[Any, dict[str, str]], None], passwords: dict[str, str], pipe: Any
) -> None:
    keep(pipe, passwords)


class TerminalAccounts:
    def __init__(
        self,
        store: CredentialStore,
        *,
        accounts_file: Path,
        instance: str,
        reload: Reload | None,
        accepts: Accepts,
        file_mode: int = 0o600,
        settle_timeout: float = 15.0,
    ) -> None:
        self._store = store
        self._file = accounts_file
        self._canary = f"{CANARY_USER}-{instance}"
        self._reload = reload
        self._accepts = accepts
        self._mode = file_mode
        self._settle_timeout = settle_timeout
        self._lock = asyncio.Lock()
        self.syncs = 0

    async def issue(
        self,
        ids: Sequence[str],
        *,
        by: str,
        keep: Callable[[Any, dict[str, str]], None] | None = None,
    ) -> dict[str, str]:
        """New passwords for ``ids`` (replacing any they had), working once this returns.
        ``keep(pipe, passwords)`` queues a copy of them, stored before the accounts (an import
        job's, for its one reader: ``CredentialStore.put_encoded``)."""
        if not ids:
            return {}
        return await self.put(await self.prepare(ids, by=by), keep=keep)

    async def prepare(self, ids: Sequence[str], *, by: str) -> NewAccounts:
        """New passwords for ``ids`` and their accounts, not stored yet (``put``)."""
        # Making and hashing 100,000 passwords is a second of CPU even at one round, and
        # their stored form a few tenths more: not on the loop.
        passwords, values = await asyncio.to_thread(_new_accounts, ids, utcnow().isoformat(), by)
        return NewAccounts(passwords, values)

    async def put(
        self, new: NewAccounts, *, keep: Callable[[Any, dict[str, str]], None] | None = None
    ) -> dict[str, str]:
        """Store prepared accounts (``issue``); their passwords."""
        if not new.passwords:
            return {}
        also = None if keep is None else functools.partial(_keep, keep, new.passwords)
        await self._store.put_encoded(new.values, also=also)
        await self.sync()
        return new.passwords

    async def revoke(self, ids: Sequence[str]) -> int:
        """Remove the accounts of ``ids``; their connections are cut once this returns."""
        removed = await self._store.remove_accounts(ids)
        if removed:
            await self.sync()
        return removed

    async def has_account(self, ids: Sequence[str]) -> set[str]:
        return await self._store.account_names(ids)

    async def sync(self) -> None:
        """Render the password file from Redis, have the broker reread it, and wait until it
        took this instance's fresh canary password (proof that it reread this file)."""
        async with self._lock:
            started = time.monotonic()
            canary_password = secrets.token_urlsafe(_PASSWORD_BYTES)
            line = account_line(self._canary, canary_password)
            await self._store.put_accounts([Account(self._canary, line, utcnow().isoformat(), "")])
            lines = await self._store.password_lines()
            await asyncio.to_thread(self._write, "".join(f"{line}\n" for line in lines))
            if self._reload is not None:
                await self._reload()
            deadline = time.monotonic() + self._settle_timeout
            while not await self._accepts(self._canary, canary_password):
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"the broker did not take the new accounts within "
                        f"{self._settle_timeout:g} s: is it rereading {self._file} "
                        f"(SIGHUP) when it changes?"
                    )
                await asyncio.sleep(_PROBE_INTERVAL)
            self.syncs += 1
            log.info(
                "accounts.synced",
                accounts=len(lines),
                seconds=round(time.monotonic() - started, 3),
            )

    def _write(self, text: str) -> None:
        # Atomic: the broker rereads a whole old file or a whole new one, never half of one.
        tmp = self._file.with_name(f".{self._file.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, self._mode)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, self._mode)
            os.replace(tmp, self._file)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
