"""Following one alert's delivery live, and its coverage per region: what ``ebd demo`` and
``ebd alerts watch`` both show."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from tqdm import tqdm

from dispatcher.cli.lang import t
from dispatcher.cli.tables import render

# The alert with its ``delivery`` (``GET /api/v1/alerts/{id}``).
Fetch = Callable[[], Awaitable[dict[str, Any]]]

# Delivery states after which no terminal will play the alert any more.
ENDED = frozenset({"cancelled", "superseded", "expired"})
POLL_SECONDS = 0.25


class Followed(NamedTuple):
    """Where following stopped: the alert as last read (empty if never), and ``why``:
    ``done`` (every expected terminal played or failed), an ended state (``cancelled``,
    ``superseded``, ``expired``) or ``timeout``."""

    alert: dict[str, Any]
    why: str

    @property
    def delivery(self) -> dict[str, Any]:
        return dict(self.alert.get("delivery", {}))

    @property
    def complete(self) -> bool:
        """Every expected terminal played it (and at least one was expected)."""
        d = self.delivery
        return bool(d.get("expected")) and d.get("played") == d.get("expected")


def settled(delivery: dict[str, Any]) -> bool:
    """Every expected terminal has played or failed, once the dispatch knows who they are."""
    expected = int(delivery.get("expected", 0))
    if expected == 0:
        # No terminal was expected: nothing will change once the alert is out (a partial
        # dispatch is retried, and may still find some).
        return delivery.get("state") == "dispatched"
    return int(delivery["played"]) + int(delivery["failed"]) >= expected


async def follow(fetch: Fetch, *, timeout: float, total: int = 0) -> Followed:
    """Polls ``fetch`` with a live bar (on standard error) until the delivery settled, the
    alert ended, or ``timeout`` seconds passed."""
    bar = tqdm(total=total or None, unit="term", desc=t("已确认", "acknowledged"))
    alert: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                alert = await fetch()
                delivery = alert["delivery"]
                expected = int(delivery.get("expected", 0))
                if expected and bar.total != expected:
                    bar.total = expected
                bar.set_postfix(played=delivery["played"], failed=delivery["failed"])
                bar.update(int(delivery["received"]) + int(delivery["failed"]) - bar.n)
                if settled(delivery):
                    return Followed(alert, "done")
                if delivery.get("state") in ENDED:
                    return Followed(alert, str(delivery["state"]))
                await asyncio.sleep(POLL_SECONDS)
    except TimeoutError:
        return Followed(alert, "timeout")
    finally:
        bar.close()


LEVEL_LABELS = {
    "city": ("城市", "city"),
    "county": ("区县", "county"),
    "township": ("乡镇", "township"),
}


def coverage_table(delivery: dict[str, Any], level: str = "city") -> str:
    """The delivery's regions of ``level`` (``by_city`` …): expected, received, played,
    failed and the share played."""
    headers = [
        t(*LEVEL_LABELS[level]),
        t("代码", "code"),
        t("应到", "expected"),
        t("已收", "received"),
        t("已播", "played"),
        t("失败", "failed"),
        t("覆盖率", "coverage"),
    ]
    rows = [
        [
            row["name"],
            row["code"],
            row["expected"],
            row["received"],
            row["played"],
            row["failed"],
            f"{share(row):.1f}%",
        ]
        for row in delivery.get(f"by_{level}", [])
    ]
    return render(headers, rows, right=(6,))


def share(counts: dict[str, Any]) -> float:
    """Per cent of the expected terminals that played."""
    expected = int(counts.get("expected", 0))
    return int(counts.get("played", 0)) / expected * 100 if expected else 0.0
