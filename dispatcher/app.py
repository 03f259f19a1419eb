"""The application factory: wiring and lifecycle of the engine's parts.

``create_app(settings)`` builds the aiohttp app with one cleanup context per resource, torn
down in reverse: embedded servers (when no URLs are configured), the Redis store, the ack
ingester, the MQTT link, the dispatch worker. It touches no signals, so tests run the real app.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from adapters.loudspeaker.ack_link import AckLink
from adapters.loudspeaker.announcement import Announcer
from adapters.loudspeaker.payload import encode_signed
from adapters.loudspeaker.ping import LinkPinger
from adapters.loudspeaker.probe import broker_accepts
from adapters.loudspeaker.publisher import MqttLink
from adapters.loudspeaker.session import BrokerSession
from adapters.sms import handlers as sms_handlers
from adapters.sms.channel import SmsChannel
from adapters.sms.gateway import SmsGateway
from adapters.sms.handlers import SMS_CHANNEL
from adapters.sms.preview import SmsTextPreview
from dispatcher.console.setup import setup_console
from dispatcher.core.approval import ApprovalPolicy
from dispatcher.core.auth import Offices
from dispatcher.core.clock import use_display_zone
from dispatcher.core.errors import ConfigError, StoreUnavailable
from dispatcher.core.redis_access import RedisAccess
from dispatcher.core.regions import RegionTree
from dispatcher.core.tasks import cancel_until_done
from dispatcher.core.wire import ACK_TOPIC_FILTER, SHARED_GROUP, STATE_TOPIC_FILTER
from dispatcher.embedded.access import BrokerAccess, redis_access
from dispatcher.embedded.processes import ManagedProcess, MosquittoServer, RedisServer
from dispatcher.embedded.signing_keys import engine_keys
from dispatcher.http import alerts, audit, escalations, health, regions, terminal_health, terminals
from dispatcher.http import approvals as approval_routes
from dispatcher.http import audio as audio_routes
from dispatcher.http import cap as cap_routes
from dispatcher.http import cap_feeds as cap_feed_poller
from dispatcher.http import jobs as job_routes
from dispatcher.http import live as live_routes
from dispatcher.http import people as people_routes
from dispatcher.http import previews as preview_routes
from dispatcher.http import templates as template_routes
from dispatcher.http.alerts import APPROVAL
from dispatcher.http.audio import AUDIO
from dispatcher.http.imports import ImportChecker, ImportJobs
from dispatcher.http.middleware import error_middleware
from dispatcher.http.principal import auth_middleware
from dispatcher.http.state import (
    API,
    BROKER_FOR_TERMINALS,
    CREDENTIALS,
    KEYRING,
    MQTT_LINKS,
    OFFICES,
    SMS,
    STORE,
    TREE,
    URLS,
    VILLAGE_GAPS,
    Connection,
    VillageGaps,
)
from dispatcher.http.terminals import PINGER
from dispatcher.metrics import REQUEST_TIMES, RequestTimes, metrics_handler, timing_middleware
from dispatcher.openapi import openapi_handler
from dispatcher.parts import (
    ACCOUNTS,
    ACK_LINK,
    BROKER,
    INGESTER,
    LINK,
    NOTIFIERS,
    SETTINGS,
    SIGNER,
    SWEEPER,
    WORKER,
)
from dispatcher.pipeline.accounts import TerminalAccounts
from dispatcher.pipeline.current import CatchUp
from dispatcher.pipeline.ingester import AckIngester
from dispatcher.pipeline.liveness import LIVENESS, LeaseKeeper
from dispatcher.pipeline.outbox import DispatchWorker
from dispatcher.pipeline.ports import EscalationNotifier, PubackHandle
from dispatcher.pipeline.sweeper import DeadlineSweeper
from dispatcher.settings import Settings
from dispatcher.store.credentials import CredentialStore
from dispatcher.store.current import CurrentStore
from dispatcher.store.jobs import JobStore
from dispatcher.store.liveness import LivenessStore
from dispatcher.store.store import Store
from drills import handlers as drill_handlers
from drills.handlers import DRILLS
from drills.scheduler import DrillScheduler
from drills.service import DrillService
from drills.store import DrillStore

log = structlog.get_logger(__name__)
SMS_GATEWAYS = web.AppKey("sms_gateways", list[SmsGateway])
# How every Redis client of the engine reaches the primary (one URL, or Redis Sentinel).
REDIS_ACCESS = web.AppKey("redis_access", RedisAccess)
# The announcements' audio (rendered once, served at /audio/, described in payloads).
ANNOUNCER = web.AppKey("announcer", Announcer)


def load_tree(settings: Settings, config_file: Path | None = None) -> RegionTree:
    path = settings.regions_path(config_file)
    if not path.exists():
        raise ConfigError(f"region file {path} does not exist", field="regions.file")
    return RegionTree.from_csv(path)


def create_app(
    settings: Settings,
    *,
    tree: RegionTree | None = None,
    config_file: Path | None = None,
    notifiers: Sequence[EscalationNotifier] = (),
    sms_gateways: Sequence[SmsGateway] | None = None,
) -> web.Application:
    """The engine as an aiohttp app; ``notifiers`` hear of every escalation besides SMS;
    ``sms_gateways`` replaces the gateways the settings would build."""
    tree = tree or load_tree(settings, config_file)
    app = web.Application(
        # Authentication after the error middleware, so what it refuses is answered as JSON.
        middlewares=[timing_middleware, error_middleware, auth_middleware],
        client_max_size=settings.api.max_body_bytes,
    )
    app[REQUEST_TIMES] = RequestTimes()
    app[SETTINGS] = settings
    app[API] = settings.api
    use_display_zone(settings.display.zone)
    app[TREE] = tree
    app[OFFICES] = Offices(settings.offices, tree)
    app[URLS] = {}
    app[VILLAGE_GAPS] = VillageGaps()
    app[NOTIFIERS] = list(notifiers)
    app[APPROVAL] = ApprovalPolicy(settings.approval, settings.offices)
    # CAP before alerts: /alerts/{id}.cap, and CAP asked for by Accept on /alerts/{id}.
    cap_routes.setup(
        app,
        settings.cap_sender_domain,
        offices=settings.offices,
        signing_key=settings.cap_signing_key,
        signing_certificate=settings.cap_signing_certificate,
    )
    # terminal_health before terminals: /terminals/health is not a terminal's id.
    for module in (
        alerts, live_routes, audit, escalations, regions, terminal_health, terminals, health,
        sms_handlers, drill_handlers,
    ):  # fmt: skip
        app.add_routes(module.routes)
    app.add_routes(people_routes.routes)
    app.add_routes(approval_routes.routes)
    app.add_routes(template_routes.routes)
    app.add_routes(preview_routes.routes)
    app.add_routes(job_routes.routes)
    app.add_routes(audio_routes.routes)
    app[ANNOUNCER] = Announcer(
        settings.audio,
        settings.state_dir.resolve() / "audio",
        settings.audio.base_url or f"http://{settings.api.listen}",
        tree=tree,
    )
    app[AUDIO] = app[ANNOUNCER]
    app[preview_routes.SMS_PREVIEWER] = SmsTextPreview(
        settings.sms, {o.id: o.sms_signature or o.name for o in settings.offices}
    )
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/api/v1/openapi.json", openapi_handler)
    setup_console(app)
    app.cleanup_ctx.extend([_services, _store, _liveness, _accounts, _ingester, _link, _sms])
    app.cleanup_ctx.extend([_audio, _worker, _sweeper, _drills, _imports])
    # Last: the feed poller starts once everything it imports through is up, stops first.
    cap_feed_poller.setup(app, settings.cap, instance=settings.instance)
    if sms_gateways is not None:
        app[SMS_GATEWAYS] = list(sms_gateways)
    return app


# Long enough for a resumed session's queue of a province's acks to come in (~35,000 at about
# 40,000 a second), short beside any resend deadline.
ACK_SETTLE_SECONDS = 2.0


CATCH_UP = web.AppKey("catch_up", CatchUp)


def _acks_settled(app: web.Application) -> bool:
    """False while acks the broker kept for the engine may still be on their way in: the ack
    link came up moments ago (the broker sends a resumed session's queue at once), or the
    ingester is more than a batch behind."""
    acks, ingester = app[ACK_LINK], app[INGESTER]
    if acks.connected.is_set() and acks.connected_for() < ACK_SETTLE_SECONDS:
        return False
    return ingester.backlog <= app[SETTINGS].dispatch.ack_batch_size


def freeze_startup_objects() -> None:
    """Keep what start-up built (the region tree's 18,762 regions, modules, settings) out of
    the garbage collector's full passes: each pass would walk them all again, a pause of tens of
    milliseconds in the middle of a wave of acks and the issue requests that arrive with it.

    For the engine's own process (``ebd serve``) once it is up: frozen objects are never
    collected, which a process that builds many apps (the tests) must not do."""
    gc.collect()
    gc.freeze()


# How long a helper thread (an import's merge, the process pool's result reader, a password
# file's rendering) may hold the GIL while the event loop waits for it. Python's 5 ms is paid
# again at every select() of the loop, so a /healthz answer took 20–80 ms during an import;
# at 0.5 ms it waits a tenth of that, and the thread's work takes about as long as before.
GIL_SWITCH_INTERVAL = 0.0005


# A garbage collection longer than this is logged (``gc.pause``): it holds every thread,
# the event loop too, and is otherwise invisible in the request latencies it causes.
GC_PAUSE_LOGGED = 0.05


def prefer_the_event_loop() -> None:
    """For the engine's own process (``ebd serve``): the loop thread gets the GIL back soon
    after it asks (``GIL_SWITCH_INTERVAL``), and long garbage collections are logged."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        if took > GC_PAUSE_LOGGED:
            log.warning(
                "gc.pause",
                seconds=round(took, 3),
                generation=info.get("generation"),
                collected=info.get("collected"),
            )

    gc.callbacks.append(on_gc)


async def _services(app: web.Application) -> AsyncIterator[None]:
    """Start a private broker and/or Redis for whichever URL is not configured, and work out
    how the engine reaches each (credentials, TLS) and what terminals are told."""
    settings = app[SETTINGS]
    state_dir = settings.state_dir.resolve()
    keys = await asyncio.to_thread(engine_keys, settings.signing, state_dir)
    app[SIGNER] = keys.signer
    app[KEYRING] = keys.keyring
    log.info("signing.key", kid=keys.signer.kid, keyring=[k.kid for k in keys.keyring.keys])
    started: list[ManagedProcess] = []
    urls = app[URLS]
    try:
        if settings.mqtt.url:
            app[BROKER] = BrokerAccess.configured(settings.mqtt)
        else:
            broker = MosquittoServer(state_dir / "mosquitto", **settings.mqtt.embedded_broker())
            await asyncio.to_thread(broker.start)
            started.append(broker)
            app[BROKER] = BrokerAccess.embedded(broker)
        embedded_redis = None
        if not settings.redis.configured:
            embedded_redis = RedisServer(state_dir / "redis")
            await asyncio.to_thread(embedded_redis.start)
            started.append(embedded_redis)
        urls["mqtt"] = app[BROKER].engine_url
        if app[BROKER].terminal_url is not None:
            told: dict[str, str] = {
                "url": app[BROKER].terminal_url or "",
                "ca_pem": app[BROKER].terminal_ca_pem or "",
            }
            app[BROKER_FOR_TERMINALS] = told
        app[REDIS_ACCESS] = redis_access(settings.redis, embedded_redis)
        # A URL with its password (masked in logs), or where the sentinels are.
        urls["redis"] = app[REDIS_ACCESS].url or app[REDIS_ACCESS].describe()
    except BaseException:
        for process in reversed(started):
            await asyncio.to_thread(process.stop)
        raise
    if started:
        # The URLs carry credentials: the log processor masks them.
        log.info("services.embedded", state_dir=str(state_dir), **urls)
    yield
    for process in reversed(started):
        await asyncio.to_thread(process.stop)


async def _accounts(app: web.Application) -> AsyncIterator[None]:
    """Terminals' broker accounts, when the engine keeps them (see ``mqtt.accounts_file``).
    The password file is rendered from Redis at start: a new broker, or one whose file was
    lost, takes every account issued before."""
    broker = app[BROKER]
    if broker.accounts_file is None or broker.terminal_url is None:
        yield
        return
    target = urlsplit(broker.terminal_url)
    tls = broker.terminal_tls()
    host, port = target.hostname or "127.0.0.1", target.port or (8883 if tls else 1883)

    async def accepts(user: str, password: str) -> bool:
        return await broker_accepts(host, port, user, password, tls=tls, timeout=2.0)

    accounts = TerminalAccounts(
        CredentialStore(app[STORE].redis),
        accounts_file=broker.accounts_file,
        instance=app[SETTINGS].instance,
        reload=broker.reload,
        accepts=accepts,
        file_mode=broker.accounts_file_mode,
    )
    await accounts.sync()
    app[ACCOUNTS] = accounts
    app[CREDENTIALS] = accounts
    yield


async def _store(app: web.Application) -> AsyncIterator[None]:
    access, redis_settings = app[REDIS_ACCESS], app[SETTINGS].redis
    store = Store.from_access(
        access,
        replicas_ack=redis_settings.replicas_ack,
        replicas_ack_timeout_ms=redis_settings.replicas_ack_timeout_ms,
    )
    deadline = time.monotonic() + 15
    while not await store.ping():
        if time.monotonic() > deadline:
            await store.close()
            raise StoreUnavailable(f"Redis at {access.describe()} does not answer")
        await asyncio.sleep(0.2)
    try:
        # Keys an engine before the Cluster hash tags wrote get their new names
        # (docs/redis-ha.md).
        await store.rename_legacy_keys()
    except BaseException:
        await store.close()
        raise
    app[STORE] = store
    yield
    await store.close()


async def _imports(app: web.Application) -> AsyncIterator[None]:
    """Import jobs (``dispatcher.http.imports``): the ones a crash of this instance left
    running are marked interrupted at start; the running ones are at shutdown, before the
    links and Redis they write through go."""
    jobs = ImportJobs(JobStore(app[STORE].redis), app[LIVENESS])
    interrupted = await jobs.recover()
    if interrupted:
        log.warning("import.jobs_interrupted", jobs=interrupted, instance=jobs.instance)
    checker = ImportChecker(app[TREE])
    app[job_routes.IMPORT_JOBS] = jobs
    app[job_routes.IMPORT_CHECKER] = checker
    yield
    await jobs.close()
    await checker.close()


async def _liveness(app: web.Application) -> AsyncIterator[None]:
    """This instance's liveness lease, renewed by a task of its own; given up after every
    worker stopped (they are torn down first), so the others take over what is left at once."""
    settings = app[SETTINGS]
    liveness = LivenessStore(
        app[STORE].redis, settings.instance, lease_seconds=settings.dispatch.lease_seconds
    )
    app[LIVENESS] = liveness
    async with _background(LeaseKeeper(liveness).run, "lease-keeper"):
        yield
    with contextlib.suppress(StoreUnavailable):
        await liveness.release()


async def _ingester(app: web.Application) -> AsyncIterator[None]:
    dispatch = app[SETTINGS].dispatch
    ingester = AckIngester(
        app[STORE],
        batch_size=dispatch.ack_batch_size,
        batch_wait=dispatch.ack_batch_wait,
        acklog_maxlen=dispatch.ack_log_maxlen,
    )
    app[INGESTER] = ingester
    async with _background(ingester.run, "ack-ingester"):
        yield


async def _link(app: web.Application) -> AsyncIterator[None]:
    """Two MQTT connections: ``MqttLink`` (aiomqtt) publishes, ``AckLink`` takes the acks."""
    settings = app[SETTINGS].mqtt
    plain = [ACK_TOPIC_FILTER, STATE_TOPIC_FILTER]
    shared = [SHARED_GROUP + topic for topic in plain]
    # Shared: several engines share the ack stream, each ack reaches exactly one of them.
    topics, stale = (shared, plain) if settings.shared_subscription else (plain, shared)
    ingester = app[INGESTER]
    catch_up: list[CatchUp] = []

    def feed(topic: str, payload: bytes, delivery: PubackHandle) -> None:
        ingester.feed(topic, payload, delivery)
        if catch_up and topic.endswith("/state"):
            catch_up[0].observe(topic, payload)

    link = MqttLink(
        BrokerSession(
            app[URLS]["mqtt"],
            app[SETTINGS].mqtt_client_id,
            feed,
            # Acks came on this connection before they had one of their own: a session kept
            # from then hands over what it queued (to the same ingester) and gives them up.
            stale_subscriptions=plain + shared,
            session_expiry=settings.session_expiry,
            keepalive=settings.keepalive,
            tls=app[BROKER].engine_tls,
        ),
        publish_timeout=settings.publish_timeout,
    )
    acks = AckLink(
        BrokerSession(
            app[URLS]["mqtt"],
            f"{app[SETTINGS].mqtt_client_id}-acks",
            feed,
            subscriptions=topics,
            stale_subscriptions=stale,
            # Shared: Mosquitto keeps handing a dead member's persistent session its share of
            # the acks. A session that ends with the connection sends them to the live
            # instances; what was in flight to the dead one comes back through resends
            # (terminals repeat acks).
            session_expiry=0 if settings.shared_subscription else settings.session_expiry,
            keepalive=settings.keepalive,
            tls=app[BROKER].engine_tls,
        )
    )
    app[LINK] = link
    app[PINGER] = LinkPinger(link, app[SIGNER])
    app[ACK_LINK] = acks
    links: list[Connection] = [link, acks]
    app[MQTT_LINKS] = links

    def confirm(deliveries: list[PubackHandle]) -> None:
        acks.confirm(deliveries)
        link.confirm(deliveries)

    ingester.confirm = confirm
    # A terminal back online without its session: the alerts in force on its cmd topic.
    encode = functools.partial(
        encode_signed,
        signer=app[SIGNER],
        audio=app[ANNOUNCER].descriptor,
        regions=app[ANNOUNCER].regional,
    )
    catch_up.append(CatchUp(CurrentStore(app[STORE]), link, encode=encode))
    app[CATCH_UP] = catch_up[0]
    async with (
        _background(catch_up[0].run, "catch-up"),
        _background(link.run, "mqtt-link"),
        _background(acks.run, "ack-link"),
    ):
        with contextlib.suppress(TimeoutError):
            await link.wait_connected(10)
            await acks.wait_connected(10)
        if not (link.connected.is_set() and acks.connected.is_set()):
            log.warning("mqtt.not_connected_yet", broker=link.url)
        yield


async def _sms(app: web.Application) -> AsyncIterator[None]:
    """The SMS channel, when gateways are configured: its worker and its settler."""
    settings = app[SETTINGS]
    gateways = app.get(SMS_GATEWAYS)
    if not settings.sms.gateways and not gateways:
        yield
        return
    channel = SmsChannel(
        settings.sms,
        app[STORE],
        app[TREE],
        signatures={o.id: o.sms_signature or o.name for o in settings.offices},
        callback_base=f"http://{settings.api.listen}",
        consumer=settings.instance,
        claim_idle_seconds=settings.dispatch.claim_idle_seconds,
        gateways=gateways,
    )
    channel.worker.use_liveness(app[LIVENESS])
    await channel.start()
    app[SMS] = channel
    app[SMS_CHANNEL] = channel
    app[NOTIFIERS].append(channel)
    try:
        async with (
            _background(channel.worker.run, "sms-worker"),
            _background(channel.settler.run, "sms-settler"),
        ):
            yield
    finally:
        await channel.close()


async def _audio(app: web.Application) -> AsyncIterator[None]:
    """Renders still running at shutdown are stopped, once the workers that start them are."""
    yield
    await app[ANNOUNCER].close()


async def _worker(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    worker = DispatchWorker(
        app[STORE],
        app[LINK],
        app[TREE],
        encode=functools.partial(
            encode_signed,
            signer=app[SIGNER],
            audio=app[ANNOUNCER].descriptor,
            regions=app[ANNOUNCER].regional,
        ),
        consumer=settings.instance,
        claim_idle_seconds=settings.dispatch.claim_idle_seconds,
        ack_deadline=lambda alert: settings.resend.deadline(alert.severity.value),
        sms=app.get(SMS_CHANNEL),
        liveness=app[LIVENESS],
    )
    app[WORKER] = worker
    async with _background(worker.run, "dispatch-worker"):
        yield


async def _sweeper(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    notifiers: list[EscalationNotifier] = app[NOTIFIERS]
    sweeper = DeadlineSweeper(
        app[STORE],
        app[LINK],
        app[TREE],
        settings.resend,
        encode=functools.partial(
            encode_signed,
            signer=app[SIGNER],
            audio=app[ANNOUNCER].descriptor,
            regions=app[ANNOUNCER].regional,
        ),
        acklog_maxlen=settings.dispatch.ack_log_maxlen,
        notifiers=notifiers,
        acks_settled=lambda: _acks_settled(app),
        liveness=app[LIVENESS],
    )
    app[SWEEPER] = sweeper
    async with _background(sweeper.run, "deadline-sweeper"):
        yield


async def _drills(app: web.Application) -> AsyncIterator[None]:
    """The drills and, on the instance holding the lease, their scheduler."""
    settings = app[SETTINGS]
    office = app[OFFICES].drill_office(settings.drills.office)
    if office is None:
        log.info("drills.off", reason="no province-level office and no [drills] office")
        yield
        return
    store = app[STORE]
    scheduler = DrillScheduler(
        DrillStore(store),
        settings.drills,
        instance=settings.instance,
        redis_pool=app[REDIS_ACCESS].sync_pool,
    )
    service = DrillService(store, app[TREE], settings.drills, office=office, timeline=scheduler)
    app[DRILLS] = service
    async with _background(functools.partial(scheduler.run, service), "drill-scheduler"):
        yield


@contextlib.asynccontextmanager
async def _background(
    run: Callable[[], Awaitable[None]], name: str
) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``run()`` as a named task for the duration, restarted if it crashes.

    A bug in one batch must not leave the engine up but deaf: log it once, start again.
    """

    async def guarded() -> None:
        backoff = 0.5
        while True:
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task.crashed", task=name, restart_in=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    task = asyncio.create_task(guarded(), name=name)
    try:
        yield task
    finally:
        # Shutdown must finish: wait a while, then say where the task hung rather than hang.
        try:
            async with asyncio.timeout(10):
                await cancel_until_done(task)
        except TimeoutError:
            log.error("task.stuck_on_shutdown", task=name, stack=_stack_of(task))


def _stack_of(task: asyncio.Task[None]) -> str:
    frames = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(f"{frame.f_code.co_qualname}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(frames)
