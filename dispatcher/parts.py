"""Typed keys of the engine's running parts in the aiohttp app.

``dispatcher.app`` sets them as it starts each part; ``/metrics`` and the tests read them.
Handlers never do: what they need is in ``dispatcher.http.state``.
"""

from __future__ import annotations

from aiohttp import web

from adapters.loudspeaker.ack_link import AckLink
from adapters.loudspeaker.publisher import MqttLink
from dispatcher.core.signing import Signer
from dispatcher.embedded.access import BrokerAccess
from dispatcher.pipeline.accounts import TerminalAccounts
from dispatcher.pipeline.ingester import AckIngester
from dispatcher.pipeline.outbox import DispatchWorker
from dispatcher.pipeline.ports import EscalationNotifier
from dispatcher.pipeline.sweeper import DeadlineSweeper
from dispatcher.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
LINK = web.AppKey("link", MqttLink)
ACK_LINK = web.AppKey("ack_link", AckLink)
INGESTER = web.AppKey("ingester", AckIngester)
WORKER = web.AppKey("worker", DispatchWorker)
SWEEPER = web.AppKey("sweeper", DeadlineSweeper)
NOTIFIERS = web.AppKey("notifiers", list[EscalationNotifier])
BROKER = web.AppKey("broker", BrokerAccess)
ACCOUNTS = web.AppKey("accounts", TerminalAccounts)
SIGNER = web.AppKey("signer", Signer)
