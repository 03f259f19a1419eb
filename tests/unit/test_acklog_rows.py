"""The ack log's entries read back as one dict an ack, whichever version wrote them."""

from __future__ import annotations

import json

from dispatcher.store.acklog import acklog_rows


def test_a_batch_entry_holds_one_row_an_ack_with_its_details() -> None:
    fields = {
        "alert_id": "A1",
        "recorded_ms": "1795000000000",
        "acks": "T1\treceived\t2026-11-27T08:00:00+08:00\t350102001001\t1\n"
        "T2\tfailed\t2026-11-27T08:00:01+08:00\t350102001002\t1\n"
        "T9\tplayed\t2026-11-27T08:00:02+08:00\t\t-3",
        "details": json.dumps({"2": "功放\t过热\n已降功率"}, ensure_ascii=False),
    }
    rows = acklog_rows("1795000000000-0", fields)
    assert [(r["terminal_id"], r["state"], r["region"], r["result"]) for r in rows] == [
        ("T1", "received", "350102001001", "1"),
        ("T2", "failed", "350102001002", "1"),
        ("T9", "played", "", "-3"),
    ]
    assert {r["alert_id"] for r in rows} == {"A1"}
    assert {r["recorded_ms"] for r in rows} == {"1795000000000"}
    assert {r["id"] for r in rows} == {"1795000000000-0"}
    assert rows[1]["detail"] == "功放\t过热\n已降功率"
    assert "detail" not in rows[0]
    assert rows[0]["at"] == "2026-11-27T08:00:00+08:00"


def test_an_entry_of_one_ack_as_older_versions_wrote_it_reads_the_same() -> None:
    old = {
        "alert_id": "A1",
        "terminal_id": "T1",
        "state": "played",
        "at": "2026-11-27T08:00:00+08:00",
        "recorded_ms": "1795000000000",
        "region": "350102001001",
        "result": "1",
    }
    assert acklog_rows("1-0", old) == [{"id": "1-0", **old}]
