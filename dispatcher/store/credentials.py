"""Terminals' broker accounts: the password-file line of each (a salted hash), who issued it
and when. Every engine instance renders the broker's password file from here."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from dispatcher.store.base import StoreBase, hash_fields
from dispatcher.store.keys import TERMS_CREDS

# Accounts per Redis command when there are many.
_PART = 5000


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    line: str
    issued_at: str
    by: str


@dataclass(frozen=True, slots=True)
class NewAccounts:
    """Accounts made but not stored yet (``dispatcher.pipeline.accounts``): the passwords,
    and their stored form (``encode_accounts``)."""

    passwords: dict[str, str]
    values: dict[str, str]


def encode_accounts(accounts: Sequence[Account]) -> dict[str, str]:
    """The stored form of accounts (name → JSON), for ``put_encoded``: seconds of CPU for a
    province's terminals, which a caller may spend in a thread."""
    return {
        a.name: json.dumps({"line": a.line, "issued_at": a.issued_at, "by": a.by}) for a in accounts
    }


class CredentialStore(StoreBase):
    async def put_accounts(
        self, accounts: Sequence[Account], *, also: Callable[[Any], None] | None = None
    ) -> None:
        """Write (or replace) accounts; see ``put_encoded``."""
        await self.put_encoded(encode_accounts(accounts), also=also)

    async def put_encoded(
        self, values: dict[str, str], *, also: Callable[[Any], None] | None = None
    ) -> None:
        """Write (or replace) accounts in their stored form (``encode_accounts``), in commands
        of ``_PART`` each. ``also(pipe)`` queues writes that must be stored before any of the
        accounts (an import job's copy of the passwords): a process that dies midway leaves
        accounts whose passwords are kept for the job's reader, or passwords of accounts never
        written (which work nowhere), never an account whose password is lost.

        Not one transaction: a province's 100,000 accounts are 200,000 arguments, which
        redis-py packs on the event loop (0.4 s) and Redis would run as one command as long."""
        if not values:
            return
        if also is not None:
            async with self.redis.pipeline(transaction=True) as pipe:
                also(pipe)
                await self.call(pipe.execute())
        names = list(values)
        for start in range(0, len(names), _PART):
            part = names[start : start + _PART]
            await self.call(
                self.redis.hset(TERMS_CREDS, mapping=hash_fields({n: values[n] for n in part}))
            )

    async def remove_accounts(self, names: Sequence[str]) -> int:
        """Remove accounts; how many there were."""
        if not names:
            return 0
        return int(await self.call(self.redis.hdel(TERMS_CREDS, *names)))

    async def account_names(self, names: Sequence[str]) -> set[str]:
        """Which of ``names`` have an account."""
        have: set[str] = set()
        for start in range(0, len(names), _PART):
            part = list(names[start : start + _PART])
            found = await self.call(self.redis.hmget(TERMS_CREDS, part))
            have.update(name for name, raw in zip(part, found, strict=True) if raw is not None)
        return have

    async def account(self, name: str) -> Account | None:
        raw = await self.call(self.redis.hget(TERMS_CREDS, name))
        return None if raw is None else _account(name, raw)

    async def password_lines(self) -> list[str]:
        """Every account's password-file line, sorted by name (a stable file, easy to diff).

        Read defensively: Redis is shared, so a value that is not what this store writes (or
        a line with a newline in it, which could smuggle in another account) is left out."""
        # HSCAN in parts, not one HGETALL: a province's accounts are tens of megabytes, and
        # each part is read and checked before the next, so the event loop keeps answering.
        found: dict[str, str] = {}
        cursor = 0
        while True:
            cursor, part = await self.call(self.redis.hscan(TERMS_CREDS, cursor, count=_PART))
            for name, raw in part.items():
                account = _account(name, raw)
                if account is not None:
                    found[name] = account.line
            if cursor == 0:
                break
        return [found[name] for name in sorted(found)]


def _account(name: str, raw: str) -> Account | None:
    try:
        # orjson: a province's 100,000 accounts are read at each password-file rewrite.
        body = orjson.loads(raw)
        line, issued_at, by = body["line"], body["issued_at"], body["by"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(line, str) or not line.startswith(f"{name}:$7$"):
        return None
    if "\n" in line or "\r" in line:
        return None
    return Account(name, line, str(issued_at), str(by))
