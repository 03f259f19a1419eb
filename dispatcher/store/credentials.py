"""Terminals' broker accounts: the password-file line of each (a salted hash), who issued it
and when. Every engine instance renders the broker's password file from here."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dispatcher.store.base import StoreBase, hash_fields
from dispatcher.store.keys import TERMS_CREDS


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    line: str
    issued_at: str
    by: str


class CredentialStore(StoreBase):
    async def put_accounts(self, accounts: Sequence[Account]) -> None:
        """Write (or replace) accounts, all in one command."""
        if not accounts:
            return
        await self.call(
            self.redis.hset(
                TERMS_CREDS,
                mapping=hash_fields(
                    {
                        a.name: json.dumps({"line": a.line, "issued_at": a.issued_at, "by": a.by})
                        for a in accounts
                    }
                ),
            )
        )

    async def remove_accounts(self, names: Sequence[str]) -> int:
        """Remove accounts; how many there were."""
        if not names:
            return 0
        return int(await self.call(self.redis.hdel(TERMS_CREDS, *names)))

    async def account_names(self, names: Sequence[str]) -> set[str]:
        """Which of ``names`` have an account."""
        if not names:
            return set()
        found = await self.call(self.redis.hmget(TERMS_CREDS, list(names)))
        return {name for name, raw in zip(names, found, strict=True) if raw is not None}

    async def account(self, name: str) -> Account | None:
        raw = await self.call(self.redis.hget(TERMS_CREDS, name))
        return None if raw is None else _account(name, raw)

    async def password_lines(self) -> list[str]:
        """Every account's password-file line, sorted by name (a stable file, easy to diff).

        Read defensively: Redis is shared, so a value that is not what this store writes (or
        a line with a newline in it, which could smuggle in another account) is left out."""
        raw: Mapping[str, str] = await self.call(self.redis.hgetall(TERMS_CREDS))
        lines = []
        for name in sorted(raw):
            account = _account(name, raw[name])
            if account is not None:
                lines.append(account.line)
        return lines


def _account(name: str, raw: str) -> Account | None:
    try:
        body = json.loads(raw)
        line, issued_at, by = body["line"], body["issued_at"], body["by"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(line, str) or not line.startswith(f"{name}:$7$"):
        return None
    if "\n" in line or "\r" in line:
        return None
    return Account(name, line, str(issued_at), str(by))
