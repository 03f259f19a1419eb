"""The upstream CAP feed poller: every ``interval`` seconds the engine reads each configured
feed (Atom or RSS whose entries link to CAP documents or embed one, or the URL of one CAP
document) and imports each CAP message in it as the feed's office, through the same path as
``POST /api/v1/cap`` (``http.cap.import_for``: signature, checks, dedup, audit).

- **Dedup**: a message already imported (by the feed or anyone) costs one Redis ``GET`` of the
  CAP index; nothing is issued or audited again. The feed itself is asked for with
  ``If-None-Match`` / ``If-Modified-Since``: an unchanged feed costs one 304.
- **One poller per feed** among engine instances: a poll starts only on the instance that
  takes the feed's lease (``SET NX PX`` its interval, ``store.keys.cap_feed_lease_key``); it is
  not given back, so a feed is polled at most once per interval whichever instances run.
- **Limits**: a timeout per request (``timeout``, below the interval), ``MAX_FEED_BYTES`` for a
  feed, ``MAX_CAP_BYTES`` for a document, at most ``max_documents`` documents per poll (the
  first ones, feeds list the newest first), three redirects.
- **Failures** (upstream unreachable, a 500, not XML, a refused CAP) are logged with the feed's
  URL (no credentials: no user info, no query) and counted (``totals``, on ``/metrics``); one
  bad entry does not stop the others, and nothing stops the poller but the engine's shutdown.
"""

from __future__ import annotations

import asyncio
import hashlib
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
import structlog
from aiohttp import web
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

from dispatcher.core.auth import Office
from dispatcher.core.cap_in import parse_cap
from dispatcher.core.cap_schema import CAP_NS, MAX_CAP_BYTES
from dispatcher.core.config import CapFeedSettings, CapSettings
from dispatcher.core.errors import ConfigError, EbdError
from dispatcher.core.tasks import cancel_until_done
from dispatcher.http.cap import import_for
from dispatcher.http.state import OFFICES, STORE
from dispatcher.store.base import StoreBase
from dispatcher.store.cap_index import CapIndex
from dispatcher.store.keys import cap_feed_lease_key

log = structlog.get_logger(__name__)

ATOM_NS = "http://www.w3.org/2005/Atom"
# A feed of a few hundred entries is well under this; anything larger is not a CAP feed.
MAX_FEED_BYTES = 2 * 1024 * 1024
MAX_REDIRECTS = 3
CAP_LINK_TYPES = ("application/cap+xml", "application/common-alerting-protocol+xml")
_A = f"{{{ATOM_NS}}}"
_CAP_ALERT = f"{{{CAP_NS}}}alert"


def shown_url(url: str) -> str:
    """The URL as logs show it: no user info, no query (either may hold a credential)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" + ("?…" if parts.query else "")


class FeedError(Exception):
    """An upstream answer the poller cannot use (status, size, not a feed); says which."""


@dataclass
class Feed:
    """A configured feed, ready to poll: its office, its headers, what it answered last."""

    settings: CapFeedSettings
    office: Office
    headers: dict[str, str]
    etag: str | None = None
    last_modified: str | None = None
    # One poll of the feed at a time in this process (the schedule's, or one asked for).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def url(self) -> str:
        return self.settings.url

    @property
    def shown(self) -> str:
        return shown_url(self.settings.url)

    @property
    def lease_key(self) -> str:
        return cap_feed_lease_key(hashlib.sha256(self.url.encode()).hexdigest())


@dataclass
class PollResult:
    """What one poll of a feed did."""

    imported: int = 0
    duplicates: int = 0
    refused: int = 0
    failed: int = 0
    not_modified: bool = False
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Entry:
    """A CAP document of a feed: linked (``url``) or embedded (``data``)."""

    url: str | None = None
    data: bytes | None = None


class _Leases(StoreBase):
    async def take(self, key: str, holder: str, ms: int) -> bool:
        return bool(await self.call(self.redis.set(key, holder, nx=True, px=ms)))


class CapFeedPoller:
    """Polls every configured feed, each in a task of its own, while the engine runs."""

    def __init__(self, app: web.Application, feeds: list[Feed], instance: str) -> None:
        self.app = app
        self.feeds = feeds
        self.instance = instance
        # Documents by outcome (imported, duplicate, refused, failed) and polls by outcome
        # (ok, not_modified, error, leased_elsewhere): what /metrics shows.
        self.documents: Counter[str] = Counter()
        self.polls: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for index, feed in enumerate(self.feeds):
                group.create_task(self._every(feed), name=f"cap-feed-{index}")

    async def _every(self, feed: Feed) -> None:
        while True:
            try:
                if await self._lease(feed):
                    await self.poll(feed)
                else:
                    self.polls["leased_elsewhere"] += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug or Redis away: the next interval tries again.
                self.polls["error"] += 1
                log.exception("cap_feed.poll_crashed", feed=feed.shown)
            # A schedule, not a wait for something: the next poll is due then.
            await asyncio.sleep(feed.settings.interval)

    async def _lease(self, feed: Feed) -> bool:
        leases = _Leases(self.app[STORE].redis)
        return await leases.take(feed.lease_key, self.instance, int(feed.settings.interval * 1000))

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": "ebd-cap-poller/1"}, auto_decompress=True
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def poll(self, feed: Feed) -> PollResult:
        """Read ``feed`` once and import what is new in it (no lease: ``run`` takes it)."""
        async with feed.lock:
            return await self._poll(feed)

    async def _poll(self, feed: Feed) -> PollResult:
        result = PollResult()
        # The import's own log lines (cap.imported, alert.accepted) say which feed it was.
        with structlog.contextvars.bound_contextvars(feed=feed.shown, office=feed.office.id):
            try:
                body = await self._feed_body(feed)
                if body is None:
                    result.not_modified = True
                    self.polls["not_modified"] += 1
                    return result
                entries = _entries(body, feed.url)[: feed.settings.max_documents]
            except (FeedError, aiohttp.ClientError, TimeoutError) as exc:
                self.polls["error"] += 1
                log.warning("cap_feed.unreadable", feed=feed.shown, error=_reason(exc))
                result.errors.append(_reason(exc))
                return result
            for entry in entries:
                await self._take(feed, entry, result)
            self.polls["ok"] += 1
            log.info(
                "cap_feed.polled",
                feed=feed.shown,
                entries=len(entries),
                imported=result.imported,
                duplicates=result.duplicates,
                refused=result.refused,
                failed=result.failed,
            )
        return result

    async def _feed_body(self, feed: Feed) -> bytes | None:
        """The feed's bytes; None when it has not changed since the last poll (304)."""
        headers = dict(feed.headers)
        if feed.etag:
            headers["If-None-Match"] = feed.etag
        if feed.last_modified:
            headers["If-Modified-Since"] = feed.last_modified
        async with self._get(feed, feed.url, headers) as response:
            if response.status == 304:
                return None
            body = await _body(response, MAX_FEED_BYTES, "feed")
            feed.etag = response.headers.get("ETag")
            feed.last_modified = response.headers.get("Last-Modified")
            return body

    @asynccontextmanager
    async def _get(
        self, feed: Feed, url: str, headers: dict[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        timeout = aiohttp.ClientTimeout(total=feed.settings.timeout)
        async with self.session.get(
            url, headers=headers, timeout=timeout, max_redirects=MAX_REDIRECTS
        ) as response:
            yield response

    async def _take(self, feed: Feed, entry: _Entry, result: PollResult) -> None:
        """Fetch one entry's CAP and import it; whatever goes wrong is counted and logged,
        and the next entry is taken all the same."""
        where = shown_url(entry.url) if entry.url else "embedded"
        try:
            data = entry.data
            if data is None:
                assert entry.url is not None  # noqa: S101  an entry is linked or embedded
                async with self._get(feed, entry.url, dict(feed.headers)) as fetched:
                    data = await _body(fetched, MAX_CAP_BYTES, "CAP document")
            if await self._known(data):
                result.duplicates += 1
                self.documents["duplicate"] += 1
                return
            response = await import_for(self.app, feed.office, data, source=f"feed {feed.shown}")
        except EbdError as exc:
            result.refused += 1
            self.documents["refused"] += 1
            result.errors.append(f"{where}: {exc.message}")
            log.warning(
                "cap_feed.refused",
                feed=feed.shown,
                document=where,
                code=exc.code,
                error=exc.message,
            )
            return
        except (FeedError, aiohttp.ClientError, TimeoutError) as exc:
            result.failed += 1
            self.documents["failed"] += 1
            result.errors.append(f"{where}: {_reason(exc)}")
            log.warning(
                "cap_feed.fetch_failed", feed=feed.shown, document=where, error=_reason(exc)
            )
            return
        if response.status == 200:  # imported meanwhile by another way in
            result.duplicates += 1
            self.documents["duplicate"] += 1
        else:
            result.imported += 1
            self.documents["imported"] += 1
            log.info("cap_feed.imported", feed=feed.shown, document=where, status=response.status)

    async def _known(self, data: bytes) -> bool:
        """Whether the message is in the CAP index already: one GET. A document that does
        not even parse is left to the import, which refuses it with its reason."""
        try:
            cap = parse_cap(data)
        except EbdError:
            return False
        index = CapIndex(self.app[STORE].redis)
        return await index.alert_of(cap.sender, cap.identifier, cap.sent) is not None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer within the timeout"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status}"
    return str(exc) or type(exc).__name__


async def _body(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    if response.status != 200:
        raise FeedError(f"the {what} answered HTTP {response.status}")
    if response.content_length is not None and response.content_length > limit:
        raise FeedError(f"the {what} is {response.content_length} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise FeedError(f"the {what} is over {limit} bytes, the limit; not read further")
        chunks.append(chunk)
    return b"".join(chunks)


def _entries(body: bytes, base: str) -> list[_Entry]:
    """The CAP documents of a feed body: an Atom feed's or RSS channel's entries (a linked
    CAP document, else an embedded CAP alert), or the body itself if it is a CAP alert."""
    try:
        root = defused_fromstring(body, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException) as exc:
        raise FeedError(f"the feed is not well-formed XML without a DTD: {exc}") from exc
    if root.tag.endswith("}alert") or root.tag == "alert":
        return [_Entry(data=body)]
    if root.tag == f"{_A}feed":
        items, found = root.findall(f"{_A}entry"), _atom_entry
    elif root.tag == "rss":
        items, found = root.findall("channel/item"), _rss_item
    else:
        raise FeedError(f"the feed's root is <{root.tag}>: neither Atom, RSS nor CAP")
    entries = []
    for item in items:
        entry = found(item, base)
        if entry is not None:
            entries.append(entry)
    return entries


def _embedded(item: ET.Element) -> _Entry | None:
    alert = item.find(f".//{_CAP_ALERT}")
    if alert is None:
        return None
    # Re-serialised: a signature over the original bytes may not survive this; signed CAP
    # is better linked than embedded.
    return _Entry(data=ET.tostring(alert, encoding="utf-8", xml_declaration=True))


def _atom_entry(item: ET.Element, base: str) -> _Entry | None:
    links = item.findall(f"{_A}link")
    for link in links:
        if link.get("type") in CAP_LINK_TYPES and link.get("href"):
            return _Entry(url=urljoin(base, link.get("href", "")))
    if (embedded := _embedded(item)) is not None:
        return embedded
    for link in links:  # no typed link: the alternate one is the message (the usual feeds)
        if link.get("rel", "alternate") == "alternate" and link.get("href"):
            return _Entry(url=urljoin(base, link.get("href", "")))
    return None


def _rss_item(item: ET.Element, base: str) -> _Entry | None:
    for enclosure in item.findall("enclosure"):
        if enclosure.get("type") in CAP_LINK_TYPES and enclosure.get("url"):
            return _Entry(url=urljoin(base, enclosure.get("url", "")))
    if (embedded := _embedded(item)) is not None:
        return embedded
    link = (item.findtext("link") or "").strip()
    return _Entry(url=urljoin(base, link)) if link else None


# --- wiring ---------------------------------------------------------------------------------

CAP_FEEDS = web.AppKey("cap_feeds", CapFeedPoller)


def setup(app: web.Application, settings: CapSettings, *, instance: str) -> None:
    """The poller of ``settings.feeds`` (none: nothing); each feed's office must be configured
    and its token file readable now (``ConfigError`` naming the feed). Call after the other
    cleanup contexts are added: the poller starts last and stops first."""
    if not settings.feeds:
        return
    feeds = []
    for index, config in enumerate(settings.feeds):
        office = app[OFFICES].get(config.office)
        if office is None:
            raise ConfigError(
                f"no office has id {config.office!r}; a feed's imports are that office's",
                field=f"cap.feeds[{index}].office",
            )
        if config.timeout >= config.interval:
            raise ConfigError(
                f"timeout {config.timeout} s is not under interval {config.interval} s",
                field=f"cap.feeds[{index}].timeout",
            )
        headers = dict(config.headers)
        if config.token_file is not None:
            headers["Authorization"] = f"Bearer {_token(config.token_file, index)}"
        feeds.append(Feed(config, office, headers))
    app[CAP_FEEDS] = CapFeedPoller(app, feeds, instance)
    app.cleanup_ctx.append(_polling)


def _token(path: Path, index: int) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the feed's token file: {exc}",
            path=path,
            field=f"cap.feeds[{index}].token_file",
        ) from exc
    if not token or not token.isascii() or not token.isprintable():
        raise ConfigError(
            "the feed's token file must hold one token of visible ASCII characters",
            path=path,
            field=f"cap.feeds[{index}].token_file",
        )
    return token


async def _polling(app: web.Application) -> AsyncIterator[None]:
    """The poller runs while the engine does; stopped before the store closes."""
    poller = app[CAP_FEEDS]
    log.info("cap_feed.polling", feeds=[feed.shown for feed in poller.feeds])
    task = asyncio.create_task(poller.run(), name="cap-feeds")
    try:
        yield
    finally:
        await cancel_until_done(task)
        await poller.close()
