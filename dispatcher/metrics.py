"""``GET /metrics``: Prometheus exposition of the engine's in-process counters."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.loudspeaker.ack_link import AckLink
from adapters.loudspeaker.publisher import MqttLink
from adapters.sms.handlers import SMS_CHANNEL
from dispatcher.core.auth import hash_token
from dispatcher.core.config import ApiSettings
from dispatcher.http.cap_feeds import CAP_FEEDS
from dispatcher.http.requests import province_office
from dispatcher.http.state import API, STORE
from dispatcher.parts import ACK_LINK, INGESTER, LINK, SWEEPER, WORKER
from drills.handlers import DRILLS


class _EngineCollector(Collector):
    def __init__(self, app: web.Application) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        app = self._app
        messages = CounterMetricFamily(
            "ebd_terminal_messages", "Terminal messages ingested, by outcome", labels=["outcome"]
        )
        if INGESTER in app:
            for outcome, n in sorted(app[INGESTER].totals.items()):
                messages.add_metric([outcome], n)
            yield GaugeMetricFamily(
                "ebd_ack_backlog", "Acks received but not yet recorded", value=app[INGESTER].backlog
            )
        yield messages
        links: list[tuple[str, str, MqttLink | AckLink | None]] = [
            ("ebd_mqtt", "the MQTT link", app.get(LINK)),
            ("ebd_mqtt_ack_link", "the connection that takes the acks", app.get(ACK_LINK)),
        ]
        for prefix, what, link in links:
            if link is not None:
                yield GaugeMetricFamily(
                    f"{prefix}_connected",
                    f"1 when {what} is up",
                    value=int(link.connected.is_set()),
                )
                yield CounterMetricFamily(
                    f"{prefix}_connects", f"Connections made by {what}", value=link.connects
                )
        if SWEEPER in app:
            yield CounterMetricFamily(
                "ebd_resends",
                "Alerts resent to terminals without an ack",
                value=app[SWEEPER].resent,
            )
            yield CounterMetricFamily(
                "ebd_escalations",
                "Terminals failed and escalated after their last resend",
                value=app[SWEEPER].escalated,
            )
        if SMS_CHANNEL in app:
            sms = app[SMS_CHANNEL]
            yield CounterMetricFamily(
                "ebd_sms_requests", "Requests made to SMS gateways", value=sms.worker.requests
            )
            yield CounterMetricFamily(
                "ebd_sms_sent",
                "Texts a gateway took (or may have taken: no answer)",
                value=sms.worker.sent,
            )
            yield CounterMetricFamily(
                "ebd_sms_receipts", "Delivery receipts taken", value=sms.receipts_taken
            )
            yield CounterMetricFamily(
                "ebd_sms_requeued",
                "Texts in doubt that their gateway had never taken, queued again",
                value=sms.settler.requeued,
            )
            up = GaugeMetricFamily(
                "ebd_sms_gateway_up", "1 while the gateway is not in failover", labels=["gateway"]
            )
            for name, status in sms.pool.status().items():
                up.add_metric([name], int(bool(status["up"])))
            yield up
        if DRILLS in app:
            drills = app[DRILLS]
            yield GaugeMetricFamily(
                "ebd_drill_scheduler_leading",
                "1 while this instance holds the drill-scheduler lease",
                value=int(drills.timeline.leading),
            )
            yield CounterMetricFamily(
                "ebd_drills_fired", "Drills fired by this instance", value=drills.fired
            )
        if STORE in app:
            yield CounterMetricFamily(
                "ebd_audit_append_failures",
                "Audit records lost: the action happened but Redis refused its record",
                value=app[STORE].audit.append_failures,
            )
        if CAP_FEEDS in app:
            for name, what, counts in (
                ("ebd_cap_feed_polls", "Polls of upstream CAP feeds", app[CAP_FEEDS].polls),
                ("ebd_cap_feed_documents", "CAP documents from feeds", app[CAP_FEEDS].documents),
            ):
                family = CounterMetricFamily(name, f"{what}, by outcome", labels=["outcome"])
                for outcome, n in sorted(counts.items()):
                    family.add_metric([outcome], n)
                yield family
        if WORKER in app:
            yield CounterMetricFamily(
                "ebd_alerts_dispatched",
                "Alerts dispatched by this instance",
                value=app[WORKER].dispatched,
            )


class RequestTimes:
    """Seconds the engine took over each API request (handler and middleware, not the wait
    for a core or the network), by method and route: what an office waits for that is ours."""

    BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.histogram = Histogram(
            "ebd_api_request_seconds",
            "Seconds the engine spent on an API request, by method and route",
            ["method", "route"],
            buckets=self.BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, route: str, seconds: float) -> None:
        self.histogram.labels(method, route).observe(seconds)


REQUEST_TIMES = web.AppKey("request_times", RequestTimes)


@web.middleware
async def timing_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        return await handler(request)
    finally:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        request.app[REQUEST_TIMES].observe(request.method, route, time.perf_counter() - started)


def _require_metrics_access(request: web.Request, api: ApiSettings) -> None:
    """Restricted metrics: the scraper token (``api.metrics_token_sha256``) or a province
    office's token; 401 without either, 403 for a lower office."""
    scheme, _, token = (request.headers.get("Authorization") or "").strip().partition(" ")
    token = token.strip()
    if (
        api.metrics_token_sha256
        and scheme.lower() == "bearer"
        and token
        and hmac.compare_digest(hash_token(token), api.metrics_token_sha256)
    ):
        return
    province_office(request, "/metrics (besides the scraper token)")


async def metrics_handler(request: web.Request) -> web.Response:
    api = request.app.get(API)
    if api is not None and (not api.metrics_public or api.metrics_token_sha256):
        _require_metrics_access(request, api)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_EngineCollector(request.app))
    body = generate_latest(registry)
    if REQUEST_TIMES in request.app:
        body += generate_latest(request.app[REQUEST_TIMES].registry)
    return web.Response(body=body, content_type="text/plain", charset="utf-8")
