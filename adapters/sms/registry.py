"""Which adapter speaks to a configured gateway: one class per ``protocol`` setting."""

from __future__ import annotations

from adapters.sms.aliyun import AliyunGateway
from adapters.sms.gateway import SmsGateway
from adapters.sms.generic import GenericGateway
from adapters.sms.settings import GatewaySettings

__all__ = ["build_gateway"]


def build_gateway(settings: GatewaySettings, callback_url: str | None) -> SmsGateway:
    """A new, not yet started adapter for ``settings``; ``callback_url`` is where this
    gateway's receipts should go (``{callback_base}/api/v1/sms/receipts/{name}``)."""
    if settings.protocol == "generic":
        return GenericGateway(settings, callback_url)
    if settings.protocol == "aliyun":
        return AliyunGateway(settings, callback_url)
    raise ValueError(f"gateway {settings.name}: unknown protocol {settings.protocol!r}")
