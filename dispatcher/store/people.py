"""People, their API tokens and their console sessions, in Redis (keys in ``keys.py``).

Secrets are never stored: a person's password as its scrypt hash (``core.passwords``), an API
token and a session id as their SHA-256. Each lookup reads the person again, so disabling a
person, revoking a token or logging out takes effect on the next request, on every instance.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dispatcher.core.errors import Conflict, NotFound
from dispatcher.core.people import Person, Role
from dispatcher.store import keys
from dispatcher.store.base import StoreBase

TOKEN_PREFIX = "ebdp_"  # noqa: S105  # the prefix that marks a person's token, no secret
# A person keeps at most this many API tokens: a script each, not one per run.
MAX_TOKENS = 20


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredPerson:
    person: Person
    password_hash: str
    created_at: str
    created_by: str


@dataclass(frozen=True, slots=True)
class Session:
    person: Person
    csrf: str
    digest: str


def _person_json(stored: StoredPerson) -> str:
    p = stored.person
    return json.dumps(
        {
            "id": p.id,
            "name": p.name,
            "office_id": p.office_id,
            "roles": sorted(r.value for r in p.roles),
            "disabled": p.disabled,
            "password": stored.password_hash,
            "created_at": stored.created_at,
            "created_by": stored.created_by,
        },
        ensure_ascii=False,
    )


def _parse_person(raw: str) -> StoredPerson:
    data: dict[str, Any] = json.loads(raw)
    person = Person(
        id=data["id"],
        name=data["name"],
        office_id=data["office_id"],
        # A role a newer engine added is ignored rather than breaking every lookup.
        roles=frozenset(Role(r) for r in data["roles"] if r in Role.__members__.values()),
        disabled=bool(data.get("disabled", False)),
    )
    return StoredPerson(person, data["password"], data["created_at"], data["created_by"])


class PeopleStore(StoreBase):
    """``Store.people``: an attribute of the engine's store, on its client."""

    async def get(self, person_id: str) -> StoredPerson | None:
        raw = await self.call(self.redis.hget(keys.PEOPLE, person_id))
        return None if raw is None else _parse_person(raw)

    async def person(self, person_id: str) -> Person | None:
        stored = await self.get(person_id)
        return None if stored is None else stored.person

    async def of_office(self, office_id: str) -> list[StoredPerson]:
        ids = sorted(await self.call(self.redis.smembers(keys.office_people_key(office_id))))
        if not ids:
            return []
        raws = await self.call(self.redis.hmget(keys.PEOPLE, ids))
        return [_parse_person(raw) for raw in raws if raw is not None]

    async def create(self, person: Person, password_hash: str, by: str) -> StoredPerson:
        """Store a new person; ``Conflict`` if the login id is taken (in any office)."""
        stored = StoredPerson(person, password_hash, datetime.now(UTC).isoformat(), by)
        added = await self.call(self.redis.hsetnx(keys.PEOPLE, person.id, _person_json(stored)))
        if not added:
            raise Conflict(
                f"the login id {person.id!r} is taken; choose another one",
                details=[{"field": "id", "message": "taken"}],
            )
        await self.call(self.redis.sadd(keys.office_people_key(person.office_id), person.id))
        return stored

    async def _rewrite(self, person_id: str, **changes: Any) -> StoredPerson:
        def queue(pipe: Any, old: list[str | None]) -> StoredPerson:
            if old[0] is None:
                raise NotFound(f"no person {person_id!r}")
            stored = _parse_person(old[0])
            person = stored.person
            if "disabled" in changes:
                person = Person(
                    person.id, person.name, person.office_id, person.roles, changes["disabled"]
                )
            new = StoredPerson(
                person,
                changes.get("password_hash", stored.password_hash),
                stored.created_at,
                stored.created_by,
            )
            pipe.hset(keys.PEOPLE, person_id, _person_json(new))
            return new

        # The people hash is the one key watched: a concurrent change of anyone is retried.
        return await self.watched_update(keys.PEOPLE, [person_id], queue, what="the person")

    async def set_disabled(self, person_id: str, disabled: bool) -> StoredPerson:
        stored = await self._rewrite(person_id, disabled=disabled)
        if disabled:
            await self.end_sessions(person_id)
        return stored

    async def set_password(self, person_id: str, password_hash: str) -> StoredPerson:
        """A new password ends every session of the person (a stolen cookie dies with it)."""
        stored = await self._rewrite(person_id, password_hash=password_hash)
        await self.end_sessions(person_id)
        return stored

    # API tokens -----------------------------------------------------------------------------

    async def issue_token(self, person_id: str) -> tuple[str, str]:
        """A new API token of the person: (token id, the token, shown once)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(6)
        hashed = digest(token)
        held = await self.call(self.redis.hlen(keys.person_tokens_key(person_id)))
        if held >= MAX_TOKENS:
            raise Conflict(
                f"{person_id} already has {held} API tokens; revoke one before issuing another"
            )
        record = {"person": person_id, "id": token_id, "issued_at": datetime.now(UTC).isoformat()}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.PERSON_TOKENS, hashed, json.dumps(record))
            pipe.hset(keys.person_tokens_key(person_id), token_id, hashed)
            await self.call(pipe.execute())
        return token_id, token

    async def tokens(self, person_id: str) -> list[dict[str, Any]]:
        """The person's tokens: id and when issued, never the token nor its hash."""
        hashes = await self.call(self.redis.hvals(keys.person_tokens_key(person_id)))
        if not hashes:
            return []
        raws = await self.call(self.redis.hmget(keys.PERSON_TOKENS, hashes))
        records = [json.loads(raw) for raw in raws if raw is not None]
        return sorted(
            ({"id": r["id"], "issued_at": r["issued_at"]} for r in records),
            key=lambda r: str(r["issued_at"]),
        )

    async def revoke_token(self, person_id: str, token_id: str) -> None:
        hashed = await self.call(self.redis.hget(keys.person_tokens_key(person_id), token_id))
        if hashed is None:
            raise NotFound(f"{person_id} has no API token {token_id!r}")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.PERSON_TOKENS, hashed)
            pipe.hdel(keys.person_tokens_key(person_id), token_id)
            await self.call(pipe.execute())

    async def by_token(self, token: str) -> Person | None:
        raw = await self.call(self.redis.hget(keys.PERSON_TOKENS, digest(token)))
        if raw is None:
            return None
        return await self.person(json.loads(raw)["person"])

    # Sessions -------------------------------------------------------------------------------

    async def open_session(self, person_id: str, seconds: int) -> tuple[str, str]:
        """A new session of ``seconds``: (the cookie's value, its CSRF token)."""
        sid = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        hashed = digest(sid)
        record = {"person": person_id, "csrf": csrf, "created_at": datetime.now(UTC).isoformat()}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.session_key(hashed), json.dumps(record), ex=seconds)
            pipe.sadd(keys.person_sessions_key(person_id), hashed)
            # The index outlives no session by more than the longest session.
            pipe.expire(keys.person_sessions_key(person_id), seconds)
            await self.call(pipe.execute())
        return sid, csrf

    async def session(self, sid: str) -> Session | None:
        hashed = digest(sid)
        raw = await self.call(self.redis.get(keys.session_key(hashed)))
        if raw is None:
            return None
        record = json.loads(raw)
        person = await self.person(record["person"])
        return None if person is None else Session(person, record["csrf"], hashed)

    async def close_session(self, sid: str) -> None:
        hashed = digest(sid)
        raw = await self.call(self.redis.getdel(keys.session_key(hashed)))
        if raw is not None:
            person_id = json.loads(raw)["person"]
            await self.call(self.redis.srem(keys.person_sessions_key(person_id), hashed))

    async def end_sessions(self, person_id: str) -> None:
        index = keys.person_sessions_key(person_id)
        hashes = await self.call(self.redis.smembers(index))
        async with self.redis.pipeline(transaction=True) as pipe:
            for hashed in hashes:
                pipe.delete(keys.session_key(hashed))
            pipe.delete(index)
            await self.call(pipe.execute())
