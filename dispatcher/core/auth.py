"""Offices, their bearer tokens and their jurisdiction: who may warn where."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dispatcher.core.config import OfficeConfig
from dispatcher.core.errors import ConfigError, Forbidden, RegionError, Unauthorized
from dispatcher.core.regions import RegionTree


@dataclass(frozen=True, slots=True)
class Office:
    id: str
    name: str
    region: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh random bearer token and the SHA-256 that goes in the config."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


class Offices:
    """Maps token hashes to offices and checks that areas lie inside an office's region."""

    def __init__(self, configs: Iterable[OfficeConfig], tree: RegionTree) -> None:
        self._tree = tree
        self._by_hash: dict[str, Office] = {}
        self._by_id: dict[str, Office] = {}
        for index, config in enumerate(configs):
            try:
                tree.get(config.region)
            except RegionError as exc:
                raise ConfigError(exc.message, field=f"offices[{index}].region") from exc
            office = Office(id=config.id, name=config.name, region=config.region)
            self._by_hash[config.token_sha256] = office
            self._by_id[config.id] = office

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, office_id: str) -> Office | None:
        return self._by_id.get(office_id)

    def drill_office(self, office_id: str | None) -> Office | None:
        """The office that issues drills: the configured one, else the first at province
        level (a drill may be anywhere in the province); None when there is neither."""
        if office_id is not None:
            return self._by_id.get(office_id)
        return next((o for o in self._by_id.values() if len(o.region) == 2), None)

    def authenticate(self, authorization: str | None) -> Office:
        """The office behind an ``Authorization: Bearer …`` header, or ``Unauthorized``."""
        if not authorization:
            raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authorization must be 'Bearer <token>'")
        if not token.isascii() or not token.isprintable():
            # Bytes that are not UTF-8 reach here as surrogate escapes, which cannot be hashed;
            # no token this engine issues has anything but visible ASCII.
            raise Unauthorized("the bearer token must be visible ASCII characters")
        digest = hash_token(token)
        # Compare against every hash in constant time so timing tells nothing about which
        # prefix matched; there are only a few hundred offices.
        found: Office | None = None
        for known, office in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                found = office
        if found is None:
            raise Unauthorized("unknown token: ask your administrator for a valid office token")
        return found

    def outside(self, office: Office, codes: Iterable[str]) -> list[str]:
        """The codes that are not inside the office's region (validated against the tree)."""
        return [code for code in codes if not self._tree.is_within(code, office.region)]

    def require_within(self, office: Office, codes: Iterable[str]) -> None:
        outside = self.outside(office, codes)
        if outside:
            raise Forbidden(
                f"office {office.id} ({office.name}) may only issue inside region "
                f"{office.region} ({self._tree.name(office.region)}); outside it: "
                + ", ".join(outside),
                region_codes=outside,
            )

    def require_may_replace(self, office: Office, sender: str, alert_id: str, verb: str) -> None:
        """Only the office that issued an alert, or one above it (whose region contains the
        issuer's region), may ``verb`` (cancel or update) it; ``Forbidden`` names the issuer.

        An issuer no longer configured leaves only province-level offices."""
        issuer = self._by_id.get(sender)
        if issuer is not None:
            if office.id == issuer.id or self._tree.is_within(issuer.region, office.region):
                return
            who = f"office {issuer.id} ({issuer.name}, region {issuer.region})"
            ask = f"ask {issuer.id} or an office above it to {verb} it"
            codes = [issuer.region]
        else:
            if len(office.region) == 2:
                return
            who = f"office {sender}, which is no longer configured"
            ask = f"ask the province office to {verb} it"
            codes = []
        raise Forbidden(
            f"alert {alert_id} was issued by {who}; office {office.id} may not {verb} it: {ask}",
            region_codes=codes,
        )

    def can_see(self, office: Office, areas: Iterable[str]) -> bool:
        """An office sees alerts that touch its region: inside it or covering it."""
        return any(
            self._tree.is_within(code, office.region) or self._tree.is_within(office.region, code)
            for code in areas
        )


@dataclass
class AuthThrottle:
    """Failed authentications per source address: after ``limit`` of them within ``window``
    seconds the source is blocked for ``window`` seconds, whatever token it then sends.

    In memory, per process: each engine instance counts what reaches it. At most
    ``max_sources`` addresses are tracked; the oldest are forgotten first."""

    limit: int
    window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    max_sources: int = 100_000
    _failures: dict[str, deque[float]] = field(init=False, default_factory=dict)
    _blocked: dict[str, float] = field(init=False, default_factory=dict)

    def blocked_for(self, source: str) -> float:
        """Seconds the source stays blocked; 0 if it is not."""
        until = self._blocked.get(source)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self._blocked[source]
            return 0.0
        return left

    def failed(self, source: str) -> int:
        """Count a failure of ``source``; its failures within the window, this one included.
        The failure that reaches ``limit`` blocks the source."""
        now = self.clock()
        times = self._failures.pop(source, None) or deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        times.append(now)
        self._failures[source] = times  # re-inserted: the dict's order is least recent first
        if len(times) >= self.limit:
            self._blocked[source] = now + self.window
        self._prune()
        return len(times)

    def _prune(self) -> None:
        while len(self._failures) > self.max_sources:
            del self._failures[next(iter(self._failures))]
        while len(self._blocked) > self.max_sources:
            del self._blocked[next(iter(self._blocked))]
