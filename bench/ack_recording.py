"""How fast the engine records acks in Redis: a province's worth (2 × 17,498) of one alert,
in batches as the ingester makes them, from terminals spread over the province's villages,
against a private redis-server configured as shipped (appendfsync always); also the seconds of
CPU Redis spent on them.

    .venv/bin/python bench/ack_recording.py [--terminals 17498] [--batch 500] [--apart]

The acks come as a wave brings them: each terminal's ``received`` and ``played`` one after the
other (so mostly in the same batch); ``--apart`` sends every ``received`` first.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import pick_terminals
from skeleton import Benchmark, main

from dispatcher.core.ack_parse import AckRecord
from dispatcher.core.wire import AckState
from dispatcher.embedded.processes import RedisServer
from dispatcher.store.keys import dispatch_key, expected_key
from dispatcher.store.store import Store
from tests.support.engine_process import cpu_seconds


class AckRecording(Benchmark, name="ack_recording"):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.acks = 0
        self.seconds: float | None = None
        self.counted = 0
        self.redis_cpu = 0.0

    @classmethod
    def arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--terminals", type=int, default=17_498)
        parser.add_argument("--batch", type=int, default=500)
        parser.add_argument(
            "--apart", action="store_true", help="every received ack before every played one"
        )

    async def measure(self, folder: Path) -> None:
        terminals, batch = self.args.terminals, self.args.batch
        with RedisServer(folder / "redis") as server:
            store = Store.from_url(server.url)
            try:
                # Spread over the province's villages as a wave's terminals are: a batch then
                # moves the counters of hundreds of townships, counties and cities.
                regions = [t["region"] for t in pick_terminals(terminals)]
                await store.redis.hset(
                    expected_key("A"), mapping={f"t{i}": regions[i] for i in range(terminals)}
                )
                await store.redis.hset(dispatch_key("A"), mapping={"state": "dispatched"})
                now = datetime.now(UTC)
                states = (AckState.RECEIVED, AckState.PLAYED)
                pairs = [(i, state) for state in states for i in range(terminals)]
                if not self.args.apart:
                    pairs.sort(key=lambda pair: pair[0])
                acks = [
                    AckRecord(f"t{i}", "A", state.value, now.isoformat(), "") for i, state in pairs
                ]
                link = asyncio.create_task(store.ack_script.run())
                cpu_before = cpu_seconds(server.pid or 0)
                started = time.perf_counter()
                # As the ingester does: every batch queued at once, Redis runs them in order.
                await asyncio.gather(
                    *(
                        store.queue_acks(acks[start : start + batch], acklog_maxlen=10_000_000)
                        for start in range(0, len(acks), batch)
                    )
                )
                self.seconds = time.perf_counter() - started
                self.redis_cpu = cpu_seconds(server.pid or 0) - cpu_before
                self.acks = len(acks)
                link.cancel()
                self.counted = int((await store.stats()).get("acks_counted", 0))
            finally:
                await store.close()

    def table(self) -> str:
        if self.seconds is None:
            return ""
        return (
            f"{self.acks} acks in {self.seconds:.2f} s: {self.acks / self.seconds:,.0f} acks/s,"
            f" Redis CPU {self.redis_cpu:.2f} s"
            f" ({1e6 * self.redis_cpu / self.acks:.1f} µs an ack)\n"
            f"counted {self.counted} (must be {self.acks})"
        )

    def complete(self) -> bool:
        return self.seconds is not None


if __name__ == "__main__":
    sys.exit(main(AckRecording))
