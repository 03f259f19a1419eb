"""How fast the engine records acks in Redis: a province's worth (2 × 17,498) of one alert,
in batches as the ingester makes them, against a private redis-server configured as shipped
(appendfsync always).

    .venv/bin/python bench/ack_recording.py [--terminals 17498] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from dispatcher.core.ack_parse import AckRecord
from dispatcher.core.wire import AckState
from dispatcher.embedded.processes import RedisServer
from dispatcher.store.keys import dispatch_key, expected_key
from dispatcher.store.store import Store


async def run(terminals: int, batch: int) -> None:
    with tempfile.TemporaryDirectory() as folder, RedisServer(Path(folder)) as server:
        store = Store.from_url(server.url)
        try:
            await store.redis.hset(
                expected_key("A"), mapping={f"t{i}": "350102001001" for i in range(terminals)}
            )
            await store.redis.hset(dispatch_key("A"), mapping={"state": "dispatched"})
            now = datetime.now(UTC)
            acks = [
                AckRecord(f"t{i}", "A", state.value, now.isoformat(), "")
                for state in (AckState.RECEIVED, AckState.PLAYED)
                for i in range(terminals)
            ]
            link = asyncio.create_task(store.ack_script.run())
            started = time.perf_counter()
            # As the ingester does: every batch queued at once, Redis runs them in order.
            await asyncio.gather(
                *(
                    store.queue_acks(acks[start : start + batch], acklog_maxlen=10_000_000)
                    for start in range(0, len(acks), batch)
                )
            )
            seconds = time.perf_counter() - started
            link.cancel()
            stats = await store.stats()
        finally:
            await store.close()
    print(f"{len(acks)} acks in {seconds:.2f} s: {len(acks) / seconds:,.0f} acks/s")
    print(f"counted {stats.get('acks_counted', 0)} (must be {len(acks)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--terminals", type=int, default=17_498)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(run(args.terminals, args.batch))


if __name__ == "__main__":
    main()
