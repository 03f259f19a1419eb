"""Typed keys of the aiohttp application's state that the engine's handlers read.

The composition root (``dispatcher.app``) fills them; feature packages keep keys of their own
beside their handlers (``drills.handlers.DRILLS``, ``adapters.sms.handlers.SMS_CHANNEL``).
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from adapters.loudspeaker.publisher import MqttLink
from dispatcher.core.auth import Offices
from dispatcher.core.config import ApiSettings
from dispatcher.core.regions import RegionTree
from dispatcher.pipeline.ack_link import AckLink
from dispatcher.pipeline.ingester import AckIngester
from dispatcher.pipeline.outbox import DispatchWorker
from dispatcher.pipeline.sweeper import DeadlineSweeper
from dispatcher.store.engine import Store


class SmsStatus(Protocol):
    """What an alert's status shows of its texts, when the SMS channel is configured."""

    async def summary(self, alert_id: str) -> dict[str, Any] | None: ...


API = web.AppKey("api", ApiSettings)
TREE = web.AppKey("tree", RegionTree)
OFFICES = web.AppKey("offices", Offices)
STORE = web.AppKey("store", Store)
URLS = web.AppKey("urls", dict[str, str])
LINK = web.AppKey("link", MqttLink)
ACK_LINK = web.AppKey("ack_link", AckLink)
INGESTER = web.AppKey("ingester", AckIngester)
WORKER = web.AppKey("worker", DispatchWorker)
SWEEPER = web.AppKey("sweeper", DeadlineSweeper)
SMS = web.AppKey("sms", SmsStatus)
