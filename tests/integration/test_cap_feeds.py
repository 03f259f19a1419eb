"""The CAP feed poller against a real upstream (an aiohttp server of the test's own) and a real
engine: new warnings of an Atom feed imported once, known ones costing nothing, an unchanged
feed a 304; one instance of several polling a feed; bad entries skipped and logged while the
good ones are imported; an upstream that fails, talks garbage or sends too much survived."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer
from defusedxml.ElementTree import fromstring as defused_fromstring
from structlog.testing import capture_logs

from dispatcher.embedded.processes import free_port
from dispatcher.http.cap_feeds import CAP_FEEDS, MAX_FEED_BYTES, CapFeedPoller, Feed
from tests.helpers import unique, wait_for
from tests.integration.engine import PROVINCE, Client, running_engine
from tests.integration.test_cap_api import alerts_headlined, cap_doc, imported

ATOM = "http://www.w3.org/2005/Atom"
SECRET = "s3cr3t-query-key"
TOKEN = "upstream-bearer-token"


@dataclass
class Upstream:
    """A CAP publisher: ``files`` by path (status, body, content type), every request kept."""

    base: str = ""
    files: dict[str, tuple[int, bytes, str]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    honour_etag: bool = True

    def hits(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    def cap(self, path: str, data: bytes) -> str:
        self.files[path] = (200, data, "application/cap+xml")
        return f"{self.base}{path}"

    def atom(self, path: str, entries: list[str | bytes]) -> str:
        """An Atom feed at ``path``: an entry per item, linking to a URL or embedding a CAP."""
        feed = ET.Element("feed", xmlns=ATOM)
        ET.SubElement(feed, "id").text = f"{self.base}{path}"
        ET.SubElement(feed, "title").text = "福建省气象灾害预警"
        ET.SubElement(feed, "updated").text = "2026-12-06T20:30:00+08:00"
        for index, item in enumerate(entries):
            entry = ET.SubElement(feed, "entry")
            ET.SubElement(entry, "id").text = f"urn:entry:{index}"
            ET.SubElement(entry, "title").text = f"预警 {index}"
            ET.SubElement(entry, "updated").text = "2026-12-06T20:30:00+08:00"
            if isinstance(item, str):
                ET.SubElement(entry, "link", rel="alternate", type="application/cap+xml", href=item)
            else:
                content = ET.SubElement(entry, "content", type="application/cap+xml")
                content.append(defused_fromstring(item))
        body = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
        self.files[path] = (200, body, "application/atom+xml")
        return f"{self.base}{path}"


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream()

    async def serve(request: web.Request) -> web.StreamResponse:
        state.requests.append((request.path, dict(request.headers)))
        if request.path == "/huge-stream":
            # No Content-Length: the limit must hold while reading.
            response = web.StreamResponse()
            response.content_type = "application/atom+xml"
            await response.prepare(request)
            for _ in range(MAX_FEED_BYTES // 65536 + 4):
                await response.write(b"<" * 65536)
            return response
        status, body, media = state.files.get(request.path, (404, b"no such file", "text/plain"))
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if status == 200 and state.honour_etag and request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        headers = {"ETag": etag} if status == 200 else {}
        return web.Response(status=status, body=body, content_type=media, headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    server = TestServer(app, port=free_port())
    await server.start_server()
    state.base = str(server.make_url("")).rstrip("/")
    yield state
    await server.close()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "upstream.token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def engine_overrides(upstream: Upstream, token_file: Path) -> dict[str, Any]:
    """The ``api`` engine polls /feed.atom of the upstream (which answers 503 until a test
    writes it), as the province office, with a key in the query and a bearer token."""
    upstream.files["/feed.atom"] = (503, b"starting", "text/plain")
    return {
        "cap": {
            "feeds": [
                {
                    "url": f"{upstream.base}/feed.atom?key={SECRET}",
                    "office": "fj-province",
                    "interval": 10,
                    "timeout": 5,
                    "token_file": str(token_file),
                }
            ]
        }
    }


def poller_in(client: Client) -> CapFeedPoller:
    app = client.app
    assert app is not None
    poller: CapFeedPoller = app[CAP_FEEDS]
    return poller


async def poller_of(api: Client) -> tuple[CapFeedPoller, Feed]:
    """The engine's poller and its feed, once its own first poll (of the upstream not ready
    yet, 503) is over: the test's polls do not meet it."""
    poller = poller_in(api)
    await wait_for(lambda: poller.polls["error"] >= 1, message="the first background poll")
    return poller, poller.feeds[0]


def warning(headline: str) -> bytes:
    return cap_doc(unique("feed"), headline=headline)


async def test_new_entries_are_imported_once_and_a_second_poll_imports_nothing(
    api: Client, upstream: Upstream
) -> None:
    # The engine's own first poll found the upstream not ready (503), and went on.
    poller, feed = await poller_of(api)
    known_headline, new_headline = unique("已导入的台风预警"), unique("鼓楼区台风红色预警")
    known = warning(known_headline)
    first = await imported(api, known)
    upstream.atom(
        "/feed.atom",
        [
            upstream.cap("/cap/new.xml", warning(new_headline)),
            upstream.cap("/cap/known.xml", known),
        ],
    )
    result = await poller.poll(feed)
    assert (result.imported, result.duplicates, result.refused, result.failed) == (1, 1, 0, 0)
    [new] = await alerts_headlined(api, new_headline)
    assert (new["areas"], new["severity"], new["sender"]) == (["350102"], "red", "fj-province")
    assert [a["id"] for a in await alerts_headlined(api, known_headline)] == [first["id"]]
    # The upstream was asked with the configured token.
    _, headers = next(r for r in upstream.requests if r[0] == "/feed.atom")
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    # Unchanged: one conditional request, answered 304, nothing fetched or imported.
    fetched = upstream.hits("/cap/new.xml")
    again = await poller.poll(feed)
    assert again.not_modified
    assert upstream.hits("/cap/new.xml") == fetched
    # Even read again in full, the known entries are only looked up, never issued again.
    upstream.honour_etag = False
    third = await poller.poll(feed)
    assert (third.imported, third.duplicates) == (0, 2)
    assert len(await alerts_headlined(api, new_headline)) == 1
    assert poller.documents["imported"] == 1


async def test_a_bad_entry_is_skipped_and_logged_while_the_good_one_is_imported(
    api: Client, upstream: Upstream
) -> None:
    poller, feed = await poller_of(api)
    good = unique("鼓楼区暴雨橙色预警")
    unknown_severity = cap_doc(unique("bad"), severity="Unknown")
    upstream.atom(
        "/feed.atom",
        [
            upstream.cap("/cap/unknown.xml", unknown_severity),
            f"{upstream.base}/cap/gone.xml",  # 404
            upstream.cap("/cap/garbage.xml", b"<alert><unclosed></alert>"),
            cap_doc(unique("embedded"), headline=good, severity="Severe"),  # embedded
        ],
    )
    with capture_logs() as logs:
        result = await poller.poll(feed)
    assert (result.imported, result.refused, result.failed) == (1, 2, 1), result.errors
    assert len(await alerts_headlined(api, good)) == 1
    refused = [e for e in logs if e["event"] == "cap_feed.refused"]
    assert {e["document"] for e in refused} == {
        f"{upstream.base}/cap/unknown.xml",
        f"{upstream.base}/cap/garbage.xml",
    }
    assert any("Unknown" in e["error"] for e in refused)
    assert any("not well-formed" in e["error"] for e in refused)
    [gone] = [e for e in logs if e["event"] == "cap_feed.fetch_failed"]
    assert "HTTP 404" in gone["error"]
    polled = next(e for e in logs if e["event"] == "cap_feed.polled")
    assert polled["feed"] == f"{upstream.base}/feed.atom?…"  # the query's key is not logged
    assert SECRET not in repr(logs)
    assert TOKEN not in repr(logs)


async def test_an_upstream_that_fails_or_floods_is_survived(
    api: Client, upstream: Upstream
) -> None:
    poller, feed = await poller_of(api)
    cases = {
        (500, b"internal error", "text/plain"): "the feed answered HTTP 500",
        (200, b"\x00\xffnot xml at all", "application/atom+xml"): "not well-formed XML",
        (200, b"<html><body>maintenance</body></html>", "text/html"): "neither Atom, RSS",
        (200, b"x" * (MAX_FEED_BYTES + 1), "application/atom+xml"): "the limit is",
    }
    for answer, expected in cases.items():
        upstream.files["/feed.atom"] = answer
        result = await poller.poll(feed)
        assert result.errors, answer
        assert expected in result.errors[0], result.errors
    # A body without a length, read no further than the limit.
    feed.settings = feed.settings.model_copy(update={"url": f"{upstream.base}/huge-stream"})
    result = await poller.poll(feed)
    assert "over 2097152 bytes" in result.errors[0]
    # Nobody listening.
    feed.settings = feed.settings.model_copy(update={"url": f"http://127.0.0.1:{free_port()}/"})
    result = await poller.poll(feed)
    assert result.errors
    # A linked CAP document over the limit is one failed entry; the next is imported.
    headline = unique("台风蓝色预警")
    feed.settings = feed.settings.model_copy(update={"url": f"{upstream.base}/feed.atom"})
    upstream.atom(
        "/feed.atom",
        [
            upstream.cap("/cap/huge.xml", b"<alert>" + b" " * 300_000 + b"</alert>"),
            upstream.cap("/cap/fine.xml", cap_doc(unique("fine"), headline=headline)),
        ],
    )
    result = await poller.poll(feed)
    assert (result.imported, result.failed) == (1, 1), result.errors
    assert "limit" in result.errors[0]
    assert len(await alerts_headlined(api, headline)) == 1
    response = await api.get("/metrics")
    text = await response.text()
    assert 'ebd_cap_feed_polls_total{outcome="error"}' in text
    assert 'ebd_cap_feed_documents_total{outcome="imported"} 1.0' in text


async def test_of_two_engines_one_polls_the_feed_and_its_warning_is_imported_once(
    redis_url: str, mqtt_url: str, tmp_path: Path, upstream: Upstream, rdb: redis.Redis
) -> None:
    headline = unique("鼓楼区台风橙色预警")
    path = f"/{unique('feed')}.atom"
    upstream.atom(path, [upstream.cap("/cap/one.xml", warning(headline))])
    feeds = {"feeds": [{"url": f"{upstream.base}{path}", "office": "fj-province"}]}
    async with (
        running_engine(redis_url, mqtt_url, tmp_path / "a", instance="feed-a", cap=feeds) as a,
        running_engine(redis_url, mqtt_url, tmp_path / "b", instance="feed-b", cap=feeds) as b,
    ):
        found = await wait_for(lambda: alerts_headlined(a, headline), timeout=15)
        assert len(found) == 1  # type: ignore[arg-type]
        polls = [poller_in(engine).polls for engine in (a, b)]
        await wait_for(lambda: all(sum(p.values()) for p in polls), message="both tried")
        # The feed was read once: the other instance found the lease taken.
        assert upstream.hits(path) == 1
        assert sorted(p["ok"] + p["leased_elsewhere"] for p in polls) == [1, 1]
        lease = poller_in(a).feeds[0].lease_key
        assert rdb.get(lease) in ("feed-a", "feed-b")
        assert 0 < int(rdb.pttl(lease)) <= 60_000
        response = await b.get("/api/v1/alerts?limit=500", headers=PROVINCE)
        assert response.status == 200


async def test_rss_items_and_a_plain_cap_url_are_read_too(api: Client, upstream: Upstream) -> None:
    poller, feed = await poller_of(api)
    by_link, by_enclosure = unique("RSS链接的预警"), unique("RSS附件的预警")
    link = upstream.cap("/cap/rss-link.xml", warning(by_link))
    enclosure = upstream.cap("/cap/rss-enclosure.xml", warning(by_enclosure))
    upstream.files["/feed.atom"] = (
        200,
        f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>预警</title>
  <item><title>1</title><link>{link}</link></item>
  <item><title>2</title><link>https://example.invalid/page.html</link>
    <enclosure url="{enclosure}" type="application/cap+xml" length="1"/></item>
</channel></rss>""".encode(),
        "application/rss+xml",
    )
    result = await poller.poll(feed)
    assert (result.imported, result.failed, result.refused) == (2, 0, 0), result.errors
    assert len(await alerts_headlined(api, by_link)) == 1
    assert len(await alerts_headlined(api, by_enclosure)) == 1
    # The feed's URL may be one CAP document.
    plain = unique("单个CAP文档")
    upstream.files["/feed.atom"] = (200, warning(plain), "application/cap+xml")
    result = await poller.poll(feed)
    assert result.imported == 1, result.errors
    assert len(await alerts_headlined(api, plain)) == 1
