"""Typed keys of the aiohttp application's state, shared by the app factory and the handlers."""

from __future__ import annotations

from aiohttp import web

from adapters.sms.channel import SmsChannel
from adapters.sms.gateway import SmsGateway
from dispatcher.ack_link import AckLink
from dispatcher.acks import AckIngester
from dispatcher.auth import Offices
from dispatcher.bus import MqttLink
from dispatcher.outbox import DispatchWorker
from dispatcher.regions import RegionTree
from dispatcher.settings import Settings
from dispatcher.store import Store
from dispatcher.sweeper import DeadlineSweeper, EscalationNotifier
from drills.service import DrillService

SETTINGS = web.AppKey("settings", Settings)
TREE = web.AppKey("tree", RegionTree)
OFFICES = web.AppKey("offices", Offices)
STORE = web.AppKey("store", Store)
LINK = web.AppKey("link", MqttLink)
ACK_LINK = web.AppKey("ack_link", AckLink)
INGESTER = web.AppKey("ingester", AckIngester)
WORKER = web.AppKey("worker", DispatchWorker)
SWEEPER = web.AppKey("sweeper", DeadlineSweeper)
NOTIFIERS = web.AppKey("notifiers", list[EscalationNotifier])
URLS = web.AppKey("urls", dict[str, str])
SMS = web.AppKey("sms", SmsChannel)
SMS_GATEWAYS = web.AppKey("sms_gateways", list[SmsGateway])
DRILLS = web.AppKey("drills", DrillService)
