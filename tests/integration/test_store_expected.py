"""Who must ack an alert, as recorded in Redis when it goes out (``Store.record_expected``)."""

from __future__ import annotations

from dispatcher.core.models import TerminalIn
from dispatcher.store.keys import counts_key, dispatch_key, expected_key, offline_key
from dispatcher.store.store import Store

TOWNSHIP_A = "350102001"  # 福州市鼓楼区 …
TOWNSHIP_B = "350102002"
OTHER_COUNTY_TOWNSHIP = "350103001"


async def test_terminals_below_the_cover_are_expected_with_counts_at_every_level(
    store: Store,
) -> None:
    villages_a = [f"{TOWNSHIP_A}{n:03d}" for n in (1, 2, 3)]
    villages_b = [f"{TOWNSHIP_B}{n:03d}" for n in (1, 2)]
    terminals = [TerminalIn(id=f"ex-{v}", region=v) for v in villages_a + villages_b]
    terminals.append(TerminalIn(id="ex-elsewhere", region=f"{OTHER_COUNTY_TOWNSHIP}001"))
    await store.register_terminals(terminals)
    await store.record_terminal_states(
        {
            f"ex-{villages_a[0]}": '{"v":1,"state":"offline"}',
            f"ex-{villages_a[1]}": '{"v":1,"state":"online"}',
            # A state that is not JSON (an old firmware's) does not make a terminal offline.
            f"ex-{villages_b[0]}": "offline?",
        }
    )

    assert await store.record_expected("EX1", [TOWNSHIP_A, TOWNSHIP_B]) == (5, 1)
    # Idempotent: a replaced worker that records again writes the same.
    assert await store.record_expected("EX1", [TOWNSHIP_A, TOWNSHIP_B]) == (5, 1)

    rdb = store.redis
    expected = await rdb.hgetall(expected_key("EX1"))
    assert expected == {f"ex-{v}": v for v in villages_a + villages_b}
    assert await rdb.smembers(offline_key("EX1")) == {f"ex-{villages_a[0]}"}
    counts = await rdb.hgetall(counts_key("EX1"))
    assert counts == {
        "35|expected": "5",
        "3501|expected": "5",
        "350102|expected": "5",
        f"{TOWNSHIP_A}|expected": "3",
        f"{TOWNSHIP_B}|expected": "2",
    }
    dispatch = await rdb.hgetall(dispatch_key("EX1"))
    assert (dispatch["expected"], dispatch["offline_at_dispatch"]) == ("5", "1")


async def test_an_empty_cover_expects_nobody(store: Store) -> None:
    assert await store.record_expected("EX2", []) == (0, 0)
    dispatch = await store.redis.hgetall(dispatch_key("EX2"))
    assert (dispatch["expected"], dispatch["offline_at_dispatch"]) == ("0", "0")


async def test_a_province_of_terminals_is_recorded_in_chunks(store: Store) -> None:
    """More ids than one Lua unpack() may take at once."""
    terminals = [
        TerminalIn(id=f"ex-many-{n}", region=f"{TOWNSHIP_A}{n % 900 + 1:03d}") for n in range(4500)
    ]
    await store.register_terminals(terminals)
    assert await store.record_expected("EX3", ["35"]) == (4500, 0)
    assert await store.redis.hlen(expected_key("EX3")) == 4500
    assert await store.redis.hget(counts_key("EX3"), "35|expected") == "4500"
