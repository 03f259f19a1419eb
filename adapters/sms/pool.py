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
# engine counts its sends over a window this much longer than the contract's second, so that no
# one-second window at the gateway sees more than the rate even with requests bunched together.
JITTER_ALLOWANCE = 0.02


@dataclass(frozen=True, slots=True)
class Pace:
    """How a gateway is fed: batches of at most ``batch`` messages, never more than ``limit``
    messages taken in any ``window_ms`` (a log of the sends in Redis), and paced evenly at
    ``refill`` messages per second so the window fills smoothly instead of in one burst.

    The log makes "never above the rate" exact, so nothing but the jitter allowance is held
    back: the ceiling is rate / 1.02 = 98 % of the contract. (The token bucket this replaced
    had to keep its capacity out of every window as well, and reached 92 % at best.)"""

    batch: int
    limit: int
    window_ms: float

    @property
    def refill(self) -> float:
        """The designed ceiling, messages per second."""
        return self.limit * 1000 / self.window_ms

    @property
    def spacing_ms(self) -> float:
        """Milliseconds of pacing each message takes."""
        return self.window_ms / self.limit

    @classmethod
    def of(cls, settings: GatewaySettings) -> Pace:
        limit = max(1, int(settings.rate))
        # Batches no bigger than 1/20 of a second's worth: a red warning queued behind a drill
        # waits at most one batch, 50 ms.
        batch = max(1, min(settings.batch_size, limit // 20))
        return cls(batch=batch, limit=limit, window_ms=1000 * (1 + JITTER_ALLOWANCE))


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
