"""Redis that survives its host: the engine through Redis Sentinel, ``WAIT`` before it answers
for an alert or a batch of acks, and Cluster hash tags on every key of one alert.

The failover tests run a password-protected primary, one replica and three sentinels on
loopback (``tests/support/sentinel.py``) and an engine process that knows only the sentinels;
the primary is killed with SIGKILL and the checks are the chaos tests' exact ones
(``test_chaos.assert_exact``): every terminal played once, counted once, each ack once. Each
failover test prints the seconds from the kill to the promotion and to the engine's next
write, which docs/redis-ha.md quotes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pydantic
import pytest
import redis
from redis.crc import key_slot

from dispatcher.core.config import RedisSettings
from dispatcher.core.errors import ConfigError, StoreUnavailable
from dispatcher.core.models import Alert, AlertRequest
from dispatcher.core.redis_access import RedisAccess
from dispatcher.embedded.access import redis_access
from dispatcher.embedded.configs import REDIS_USER
from dispatcher.store import keys
from dispatcher.store.ordered_script import OrderedScript
from dispatcher.store.store import Store
from receiver.simulator import Behaviour
from tests.helpers import alert_body, unique, wait_for
from tests.integration import test_sms_chaos as sms_chaos
from tests.integration.engine import online, people
from tests.integration.test_chaos import (
    PROVINCE,
    RESEND,
    assert_exact,
    province_terminals,
    until_played,
)
from tests.support.engine_process import EngineApi
from tests.support.sentinel import SERVICE, SentinelCluster, sentinel_engine

TERMINALS = 300
# Sentinel's own pace (down after 1 s, then an election and a promotion) bounds these.
PROMOTION_TIMEOUT = 15.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    with SentinelCluster(tmp_path / "redis-ha") as servers:
        yield servers


@pytest.fixture
async def ha_store(cluster: SentinelCluster) -> AsyncIterator[Store]:
    """The engine's store through the sentinels, waiting for one replica."""
    access = RedisAccess(
        url=None,
        sentinels=tuple((s.host, s.port) for s in cluster.sentinels),
        service=SERVICE,
        username=REDIS_USER,
        password=cluster.primary.password,
        sentinel_password=cluster.sentinel_password,
    )
    store = Store.from_access(access, replicas_ack=1, replicas_ack_timeout_ms=2000)
    yield store
    await store.close()


def states(rdb: redis.Redis, alert_id: str) -> Counter[str]:
    """How many terminals are in each state of the alert, on the primary the sentinels name."""
    try:
        return Counter(cast(dict[str, str], rdb.hgetall(keys.tstate_key(alert_id))).values())
    except (redis.RedisError, OSError):
        return Counter()  # no primary right now


async def promoted(cluster: SentinelCluster) -> bool:
    try:
        where = await asyncio.to_thread(cluster.primary_address)
    except (redis.RedisError, OSError):
        return False
    return where == (cluster.replica.host, cluster.replica.port)


# -- failover -----------------------------------------------------------------------------------


async def test_a_primary_killed_mid_dispatch_loses_no_ack_and_counts_each_terminal_once(
    cluster: SentinelCluster, mqtt_url: str, tmp_path: Path
) -> None:
    """The primary dies between the terminals' ``received`` and their ``played`` (played 2 s
    after): the played acks reach an engine whose Redis is gone, wait in it, and are recorded
    on the promoted replica; the received ones, confirmed by the replica before they were
    released, are all still there."""
    terminals = province_terminals(TERMINALS, unique("sk"))
    engine = sentinel_engine(tmp_path, cluster, mqtt_url, resend=RESEND)
    rdb = cluster.client()
    async with (
        engine,
        EngineApi(engine.base_url) as api,
        online(api, terminals, mqtt_url, Behaviour(play_time=2.0)) as sim,
    ):
        alert_id = await api.issue(areas=[PROVINCE])
        await wait_for(
            lambda: asyncio.to_thread(lambda: states(rdb, alert_id)["received"] == TERMINALS),
            timeout=15,
        )
        cluster.primary.kill()
        killed = time.monotonic()
        assert sim.played(alert_id) < TERMINALS, "every ack was in before the kill"
        await wait_for(lambda: promoted(cluster), timeout=PROMOTION_TIMEOUT, interval=0.05)
        promotion = time.monotonic() - killed
        await wait_for(
            lambda: asyncio.to_thread(lambda: states(rdb, alert_id)["played"] > 0),
            timeout=PROMOTION_TIMEOUT,
        )
        writing = time.monotonic() - killed
        print(
            f"\nsentinel failover: promoted {promotion:.2f} s after the kill, "
            f"the engine recording acks again {writing:.2f} s after it"
        )
        state = await until_played(api, rdb, alert_id, TERMINALS)
        assert_exact(rdb, sim, terminals, alert_id, state)
        assert state["state"] == "dispatched"
    rdb.close()


async def test_an_alert_answered_201_right_before_the_kill_is_sent_after_the_promotion(
    cluster: SentinelCluster, mqtt_url: str, tmp_path: Path
) -> None:
    """The 201 came once the replica had the alert; the primary dies at once, and the alert
    plays everywhere from the promoted replica. No replica is left then: the next alert is
    answered 503 naming it (stored and queued, not confirmed), and is sent all the same."""
    terminals = province_terminals(TERMINALS, unique("s2"))
    engine = sentinel_engine(tmp_path, cluster, mqtt_url, resend=RESEND)
    rdb = cluster.client()
    async with (
        engine,
        EngineApi(engine.base_url) as api,
        online(api, terminals, mqtt_url) as sim,
    ):
        alert_id = await api.issue(areas=[PROVINCE])
        cluster.primary.kill()
        await wait_for(lambda: promoted(cluster), timeout=PROMOTION_TIMEOUT, interval=0.05)
        state = await until_played(api, rdb, alert_id, TERMINALS)
        # Acks the engine took while the dispatch was cut short may come only with a resend.
        assert_exact(rdb, sim, terminals, alert_id, state, every_ack_arrives=False)

        key = unique("no-replica")
        body = alert_body(areas=[PROVINCE], headline="无副本")
        url = f"{engine.base_url}/api/v1/alerts"
        async with api.http.post(url, json=body, headers={"Idempotency-Key": key}) as response:
            assert response.status == 503, await response.text()
            error = (await response.json())["error"]
        assert error["code"] == "store_unavailable"
        assert error["details"]["replicas"] == 0
        assert error["details"]["replicas_wanted"] == 1
        assert "Idempotency-Key" in error["message"]
        unconfirmed = error["details"]["alert_id"]
        # A retry with the key finds the same alert, still unconfirmed: 503 again, no new one.
        async with api.http.post(url, json=body, headers={"Idempotency-Key": key}) as response:
            assert response.status == 503
            assert (await response.json())["error"]["details"]["alert_id"] == unconfirmed
        # It goes out, so it is on record: once, though it was answered twice.
        records = [json.loads(r) for r in rdb.hvals(keys.AUDIT_RECORDS)]
        issued = [r for r in records if r.get("target") == unconfirmed]
        assert [r["action"] for r in issued] == ["alert.issue"]
        state = await until_played(api, rdb, unconfirmed, TERMINALS)
        assert all(sim.plays_of(t.id).get(unconfirmed) == 1 for t in terminals)
        assert (state["expected"], state["received"], state["played"]) == (TERMINALS,) * 3
        assert states(rdb, unconfirmed) == {"played": TERMINALS}
        assert rdb.hget(keys.dispatch_key(unconfirmed), "acks_counted") == str(2 * TERMINALS)
        assert rdb.zcard(keys.ALERTS) == 2
    rdb.close()


async def test_a_primary_killed_mid_send_of_texts_everyone_texted_once(
    cluster: SentinelCluster, mqtt_url: str, tmp_path: Path
) -> None:
    """The SMS worker across the failover: 300 texts at 100/s, the primary killed once a
    third were accepted; the worker rides out the switch and everyone gets one text."""
    n, limit = 300, 100
    async with sms_chaos.RetryingGateway(rate_limit=limit, latency=0.1) as gw:
        gateway = gw.settings("gw1", rate=limit, **sms_chaos.GATEWAY)
        engine = sentinel_engine(
            tmp_path,
            cluster,
            mqtt_url,
            # A client id of its own: the session broker is shared with other tests.
            client_id=unique("sentinel-sms"),
            sms={**sms_chaos.SMS, "gateways": [gateway]},
        )
        rdb = cluster.client()
        async with engine, EngineApi(engine.base_url) as api:
            rows = people(n, sms_chaos.VILLAGES[0], role="resident")
            await sms_chaos.register(api, rows)
            alert_id = await sms_chaos.issue(api, sms_chaos.VILLAGES[0])
            await wait_for(lambda: len(gw.accepted) >= n // 3, timeout=20, interval=0.005)
            cluster.primary.kill()
            assert len(gw.accepted) < n, "the kill came too late: everything was sent"
            await wait_for(lambda: promoted(cluster), timeout=PROMOTION_TIMEOUT, interval=0.05)
            summary = await sms_chaos.until_delivered(api, alert_id, n)
            await wait_for(
                lambda: asyncio.to_thread(sms_chaos.quiet, rdb),
                timeout=sms_chaos.SETTLE,
                message="outbox and doubts empty",
            )
        assert summary["failed"] == summary["unknown"] == 0, summary
        sms_chaos.assert_once(gw, {alert_id: [r["phone"] for r in rows]}, limit=limit)
        rdb.close()


# -- WAIT at the store --------------------------------------------------------------------------


def _alert(headline: str = "副本") -> Alert:
    request = AlertRequest.model_validate(alert_body(headline=headline, areas=["350102"]))
    return Alert.issue(request, office_id="fj-province", office_name="福建省", areas=["350102"])


async def test_a_stored_alert_is_on_the_replica_when_create_alert_returns(
    cluster: SentinelCluster, ha_store: Store
) -> None:
    alert = _alert()
    stored, created = await ha_store.create_alert(alert, office_id="fj-province")
    assert created
    # Read from the replica itself, at once: WAIT returned only once it had the writes.
    with cluster.node_client(cluster.replica) as replica:
        assert replica.get(keys.alert_key(alert.id)) == alert.model_dump_json()
        assert replica.hget(keys.dispatch_key(alert.id), "state") == "queued"
    assert stored.id == alert.id


async def test_acks_resolve_once_the_replica_has_them(
    cluster: SentinelCluster, ha_store: Store
) -> None:
    link = OrderedScript(
        ha_store.redis.connection_pool,
        "return redis.call('INCRBY', KEYS[1], ARGV[1])",
        name="incr",
    )
    link.wait_replicas, link.wait_timeout_ms = 1, 2000
    task = asyncio.create_task(link.run())
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(link.call(["ebd:test:n"], [k]) for k in (1, 2, 3))), 10
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert results == [1, 3, 6]
    assert link.unreplicated == 0
    with cluster.node_client(cluster.replica) as replica:
        assert replica.get("ebd:test:n") == "6"


async def test_with_too_few_replicas_an_alert_is_stored_queued_and_refused_with_503(
    redis_url: str, rdb: redis.Redis
) -> None:
    """The session's Redis has no replica: the alert is on the primary and in the outbox,
    the caller is told 503 with its id, and a replay of its Idempotency-Key is 503 too."""
    store = Store.from_url(redis_url)
    store.replicas_ack, store.replicas_ack_timeout_ms = 1, 50
    alert = _alert()
    try:
        with pytest.raises(StoreUnavailable) as refused:
            await store.create_alert(alert, office_id="fj-province", idempotency=("k-1", "body-1"))
        assert refused.value.details == {
            "alert_id": alert.id,
            "replicas": 0,
            "replicas_wanted": 1,
        }
        assert rdb.exists(keys.alert_key(alert.id))
        stream = keys.OUTBOX_URGENT if alert.urgent else keys.OUTBOX
        queued = cast(list[tuple[str, dict[str, str]]], rdb.xrange(stream))
        assert [fields["alert_id"] for _, fields in queued] == [alert.id]
        with pytest.raises(StoreUnavailable):
            await store.replay("fj-province", "k-1", "body-1")
        with pytest.raises(StoreUnavailable):
            await store.create_alert(
                _alert(), office_id="fj-province", idempotency=("k-1", "body-1")
            )
        # Still the one alert: the retries found it, made none.
        assert rdb.zcard(keys.ALERTS) == 1
        store.replicas_ack = 0
        assert (await store.replay("fj-province", "k-1", "body-1")) == alert
    finally:
        await store.close()


async def test_with_too_few_replicas_acks_are_released_after_the_timeout_and_counted(
    redis_url: str,
) -> None:
    """Holding acks behind a missing replica would stop the province's ack counting: they
    resolve after the WAIT timeout, and the link counts the write as unreplicated."""
    store = Store.from_url(redis_url)
    link = OrderedScript(
        store.redis.connection_pool, "return redis.call('INCR', KEYS[1])", name="incr"
    )
    link.wait_replicas, link.wait_timeout_ms = 1, 100
    task = asyncio.create_task(link.run())
    try:
        started = time.monotonic()
        assert await asyncio.wait_for(link.call(["ebd:test:n"], []), 10) == 1
        assert time.monotonic() - started >= 0.1
        assert link.unreplicated == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"sentinels": ["127.0.0.1"]}, "must be HOST:PORT"),
        ({"sentinels": ["127.0.0.1:0"], "sentinel_service": "m"}, "must be HOST:PORT"),
        ({"sentinels": ["127.0.0.1:70000"], "sentinel_service": "m"}, "must be HOST:PORT"),
        ({"sentinels": ["a b:26379"], "sentinel_service": "m"}, "malformed host"),
        ({"sentinels": ["h:1", "h:1"], "sentinel_service": "m"}, "listed twice"),
        ({"sentinels": ["h:26379"]}, "sentinel_service is not"),
        ({"sentinel_service": "m"}, "need sentinels"),
        ({"sentinel_password_file": "/x"}, "need sentinels"),
        ({"sentinels": ["h:1"], "sentinel_service": "m", "url": "redis://h:1"}, "not both"),
        ({"sentinels": ["h:1"], "sentinel_service": "m m"}, "sentinel monitor NAME"),
        ({"username": "ebd", "url": "redis://h:1"}, "username is for sentinels"),
        ({"replicas_ack": -1}, "greater than or equal to 0"),
        ({"replicas_ack_timeout_ms": 0}, "greater than or equal to 10"),
    ],
)
def test_a_bad_redis_section_is_refused_saying_what_to_fix(
    values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(pydantic.ValidationError, match=complaint):
        RedisSettings.model_validate(values)


def test_a_good_sentinel_section_is_taken() -> None:
    settings = RedisSettings.model_validate(
        {
            "sentinels": ["10.0.0.1:26379", "[::1]:26380"],
            "sentinel_service": "ebd-primary",
            "replicas_ack": 1,
        }
    )
    access = redis_access(settings, None)
    assert access.sentinels == (("10.0.0.1", 26379), ("::1", 26380))
    assert access.describe() == "sentinel://10.0.0.1:26379,::1:26380/ebd-primary"
    assert settings.configured


def test_a_sentinel_password_file_others_can_read_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "sentinel-password"
    secret.write_text("s3cret\n", encoding="utf-8")
    secret.chmod(0o644)
    settings = RedisSettings.model_validate(
        {
            "sentinels": ["127.0.0.1:26379"],
            "sentinel_service": "ebd-primary",
            "sentinel_password_file": str(secret),
        }
    )
    with pytest.raises(ConfigError, match="readable by others"):
        redis_access(settings, None)


# -- Cluster hash tags ----------------------------------------------------------------------------


def test_every_key_of_one_alert_hashes_to_one_cluster_slot() -> None:
    alert_id = "fj-province-20261127T051500Z-3f9a1c2b"
    per_alert = [
        keys.alert_key(alert_id),
        keys.dispatch_key(alert_id),
        keys.expected_key(alert_id),
        keys.tstate_key(alert_id),
        keys.counts_key(alert_id),
        keys.offline_key(alert_id),
        keys.resends_key(alert_id),
        keys.alert_escalations_key(alert_id),
        keys.sms_job_key(alert_id),
        *keys.sms_job_keys(alert_id),
        keys.sms_job_key(f"{alert_id}.esc"),
        *keys.sms_job_keys(f"{alert_id}.esc"),
    ]
    assert {key_slot(k.encode()) for k in per_alert} == {key_slot(alert_id.encode())}
    drill = [keys.drill_history_key("d-1"), keys.drill_report_key("d-1")]
    assert len({key_slot(k.encode()) for k in [*drill, keys.drill_acks_key("d-1")]}) == 1


async def test_keys_named_before_the_hash_tags_are_renamed_once(
    store: Store, rdb: redis.Redis
) -> None:
    old = {
        "ebd:alert:a-1": "{}",
        "ebd:alert:a-1:dispatch": "x",
        "ebd:smsjob:a-1.esc:counts": "y",
        "ebd:drill:d-1:report": "z",
    }
    for key, value in old.items():
        rdb.set(key, value)
    rdb.set("ebd:alerts:unrelated", "kept")
    assert await store.rename_legacy_keys() == 4
    assert rdb.get(keys.alert_key("a-1")) == "{}"
    assert rdb.get(keys.dispatch_key("a-1")) == "x"
    assert rdb.get(keys.sms_job_keys("a-1.esc")[2]) == "y"
    assert rdb.get(keys.drill_report_key("d-1")) == "z"
    assert not any(rdb.exists(k) for k in old)
    assert rdb.get("ebd:alerts:unrelated") == "kept"
    # Done once: a key written under an old name later is not looked for again.
    rdb.set("ebd:alert:a-2", "{}")
    assert await store.rename_legacy_keys() == 0
    assert rdb.get(keys.SCHEMA) == str(keys.SCHEMA_VERSION)
