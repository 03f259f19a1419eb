"""The configured gateways in priority order, how fast each may be fed, and which is healthy.

Failover is decided per request: a gateway that failed ``failover_after`` requests in a row
(answers that mean "not taken": throttled, 5xx, no connection) is passed over for ``cooldown``
seconds, and the next one by priority takes its traffic. Only messages a gateway did not take
move to another; a message in doubt stays with the gateway that may have it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from adapters.sms.gateway import SmsGateway
from adapters.sms.settings import GatewaySettings, SmsSettings

log = structlog.get_logger(__name__)

# Requests arrive at the gateway with jitter: two sent 50 ms apart may land 30 ms apart. The
# refill rate leaves room for this much bunching inside any one-second window.
JITTER_ALLOWANCE = 0.02


@dataclass(frozen=True, slots=True)
class Pace:
    """How a gateway is fed: batches of ``batch``, a bucket holding ``capacity`` tokens and
    refilled at ``refill``/s, so any one-second window sees at most capacity + refill ≤ rate.

    The bucket holds a quarter batch more than one batch: a sender that wakes a few
    milliseconds late would otherwise find it full and the tokens of those milliseconds lost
    (measured: 87 % of the rate with room for one batch only)."""

    batch: int
    capacity: int
    refill: float

    @classmethod
    def of(cls, settings: GatewaySettings) -> Pace:
        # Batches no bigger than 1/20 of a second's worth keep the burst margin small.
        if settings.rate < 3:
            # One text at a time, a little over a second apart: no window sees two.
            return cls(batch=1, capacity=1, refill=1 / (1 + JITTER_ALLOWANCE))
        batch = max(1, min(settings.batch_size, int(settings.rate // 20)))
        capacity = batch + max(1, batch // 4)
        refill = (settings.rate - capacity) / (1 + JITTER_ALLOWANCE)
        return cls(batch=batch, capacity=capacity, refill=refill)


@dataclass(slots=True)
class _Health:
    failures: int = 0
    down_until: float = 0.0
    requests: int = 0
    sent: int = field(default=0)


class GatewayPool:
    def __init__(self, gateways: Sequence[SmsGateway], settings: SmsSettings) -> None:
        self._gateways = sorted(gateways, key=lambda g: (g.settings.priority, g.name))
        self._by_name = {g.name: g for g in self._gateways}
        self._settings = settings
        self._health = {g.name: _Health() for g in self._gateways}
        self.paces = {g.name: Pace.of(g.settings) for g in self._gateways}

    def __bool__(self) -> bool:
        return bool(self._gateways)

    def __iter__(self):  # type: ignore[no-untyped-def]  # a plain iterator of gateways
        return iter(self._gateways)

    def get(self, name: str) -> SmsGateway | None:
        return self._by_name.get(name)

    def pick(self) -> SmsGateway:
        """The first healthy gateway by priority; if none is, the one back soonest."""
        now = time.monotonic()
        for gateway in self._gateways:
            if self._health[gateway.name].down_until <= now:
                return gateway
        return min(self._gateways, key=lambda g: self._health[g.name].down_until)

    def succeeded(self, gateway: SmsGateway, sent: int) -> None:
        health = self._health[gateway.name]
        health.requests += 1
        health.sent += sent
        if health.failures >= self._settings.failover_after:
            log.info("sms.gateway_recovered", gateway=gateway.name)
        health.failures = 0
        health.down_until = 0.0

    def failed(self, gateway: SmsGateway) -> None:
        health = self._health[gateway.name]
        health.requests += 1
        health.failures += 1
        if health.failures == self._settings.failover_after:
            health.down_until = time.monotonic() + self._settings.cooldown
            others = [g.name for g in self._gateways if g is not gateway]
            log.warning(
                "sms.gateway_down",
                gateway=gateway.name,
                failures=health.failures,
                cooldown=self._settings.cooldown,
                failover_to=others[:1],
            )
        elif health.failures > self._settings.failover_after:
            health.down_until = time.monotonic() + self._settings.cooldown

    def status(self) -> dict[str, dict[str, float | int | bool]]:
        now = time.monotonic()
        return {
            name: {
                "up": health.down_until <= now,
                "failures_in_a_row": health.failures,
                "requests": health.requests,
                "sent": health.sent,
            }
            for name, health in self._health.items()
        }
