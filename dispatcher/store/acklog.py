"""The ack log: every ack of a known alert as it was recorded, one stream entry a batch."""

from __future__ import annotations

import json
from collections.abc import Mapping

from dispatcher.store.base import StoreBase
from dispatcher.store.keys import ACKLOG


class AckLogStore(StoreBase):
    async def ack_log(
        self, *, count: int = 100, start: str = "-", alert_id: str | None = None
    ) -> list[dict[str, str]]:
        """The acks of the log's first ``count`` entries from ``start`` (a stream id), one dict
        an ack, each with the id of the entry that holds it; only ``alert_id``'s if given."""
        entries = await self.call(self.redis.xrange(ACKLOG, min=start, count=count))
        return [
            row
            for entry_id, fields in entries
            if alert_id is None or fields.get("alert_id") == alert_id
            for row in acklog_rows(entry_id, fields)
        ]

    async def acks_since(self, alert_id: str, since_ms: int) -> list[dict[str, str]]:
        """Every ack of one alert logged since ``since_ms``, however long the log is since."""
        out: list[dict[str, str]] = []
        start = f"{since_ms}-0"
        while True:
            page = await self.call(self.redis.xrange(ACKLOG, min=start, count=5000))
            for entry_id, fields in page:
                if fields.get("alert_id") == alert_id:
                    out.extend(acklog_rows(entry_id, fields))
            if len(page) < 5000:
                return out
            # Stream ids are "ms-seq": the next page starts just after the last entry read.
            ms, _, seq = page[-1][0].partition("-")
            start = f"{ms}-{int(seq) + 1}"


def acklog_rows(entry_id: str, fields: Mapping[str, str]) -> list[dict[str, str]]:
    """The acks one ``ebd:acklog`` entry holds, one dict each: alert_id, terminal_id, state,
    at, recorded_ms, region, result (and detail when the terminal gave one).

    An entry is a batch (``acks``: one line per ack, tab-separated). Entries written before
    batches were logged whole hold one ack in their own fields, and read the same.
    """
    if "acks" not in fields:
        return [{"id": entry_id, **fields}]
    details = json.loads(fields["details"]) if "details" in fields else {}
    rows = []
    for n, line in enumerate(fields["acks"].split("\n"), start=1):
        terminal, state, at, region, result = line.split("\t")
        row = {
            "id": entry_id,
            "alert_id": fields["alert_id"],
            "terminal_id": terminal,
            "state": state,
            "at": at,
            "recorded_ms": fields["recorded_ms"],
            "region": region,
            "result": result,
        }
        if str(n) in details:
            row["detail"] = details[str(n)]
        rows.append(row)
    return rows
