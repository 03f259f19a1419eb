"""Typed keys of the aiohttp application's state that the engine's handlers read.

The composition root (``dispatcher.app``) fills them and keeps the keys of the engine's parts
(``dispatcher.app.LINK`` and the like); feature packages keep keys of their own beside their
handlers (``drills.handlers.DRILLS``, ``adapters.sms.handlers.SMS_CHANNEL``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiohttp import web

from dispatcher.core.auth import Offices
from dispatcher.core.config import ApiSettings
from dispatcher.core.regions import RegionTree
from dispatcher.core.signing import Keyring
from dispatcher.store.credentials import NewAccounts
from dispatcher.store.store import Store


class Connection(Protocol):
    """A link to the broker, as readiness sees it."""

    @property
    def connected(self) -> asyncio.Event:
        """Set while the link is up."""
        ...


class Credentials(Protocol):
    """Terminals' broker accounts, when the engine keeps them."""

    async def issue(
        self,
        ids: Sequence[str],
        *,
        by: str,
        keep: Callable[[Any, dict[str, str]], None] | None = None,
    ) -> dict[str, str]:
        """New passwords (replacing any), working once this returns; ``keep(pipe,
        passwords)`` queues a copy of them, stored before the accounts."""
        ...

    async def prepare(self, ids: Sequence[str], *, by: str) -> NewAccounts:
        """``issue`` in two steps: the new accounts made (not stored yet), …"""
        ...

    async def put(
        self, new: NewAccounts, *, keep: Callable[[Any, dict[str, str]], None] | None = None
    ) -> dict[str, str]:
        """… then stored and working once this returns; their passwords."""
        ...

    async def revoke(self, ids: Sequence[str]) -> int:
        """Remove the accounts; their connections are cut once this returns."""
        ...

    async def has_account(self, ids: Sequence[str]) -> set[str]: ...


class SmsStatus(Protocol):
    """What an alert's status shows of its texts, when the SMS channel is configured."""

    async def summary(self, alert_id: str) -> dict[str, Any] | None: ...


API = web.AppKey("api", ApiSettings)
TREE = web.AppKey("tree", RegionTree)
OFFICES = web.AppKey("offices", Offices)
STORE = web.AppKey("store", Store)
URLS = web.AppKey("urls", dict[str, str])
# The broker links the engine needs up to be ready: the publishing link and the ack link.
MQTT_LINKS = web.AppKey("mqtt_links", list[Connection])
SMS = web.AppKey("sms", SmsStatus)
CREDENTIALS = web.AppKey("credentials", Credentials)
# Where terminals connect and the CA they verify the broker with: {"url", "ca_pem"}.
BROKER_FOR_TERMINALS = web.AppKey("broker_for_terminals", dict[str, str])
# The public keys terminals verify payloads with (given out with their credentials).
KEYRING = web.AppKey("keyring", Keyring)


class VillageGaps:
    """The villages each dispatched alert reaches no terminal in, as found once.

    An alert's expected terminals are fixed when it is dispatched, and finding its gaps
    reads them all (17,498 for the province): every status request of a wave reading them
    again would cost Redis and the engine more than the request itself. Keyed by the alert
    and its dispatch time (a dispatch taken over by another instance writes the set anew);
    the most recent ``size`` alerts are kept.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._found: dict[tuple[str, str], tuple[str, ...]] = {}

    def get(self, alert_id: str, dispatched_at: str) -> tuple[str, ...] | None:
        return self._found.get((alert_id, dispatched_at))

    def put(self, alert_id: str, dispatched_at: str, codes: tuple[str, ...]) -> None:
        self._found[(alert_id, dispatched_at)] = codes
        while len(self._found) > self._size:
            del self._found[next(iter(self._found))]  # the oldest: dicts keep their order


VILLAGE_GAPS = web.AppKey("village_gaps", VillageGaps)
