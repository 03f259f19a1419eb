"""The audit chain: records built on each other verify; an edit, a removal, a reordering or a
removed tail is found at the seq where it happened; details never keep secrets or phones."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from dispatcher.core.audit import (
    GENESIS,
    AuditAction,
    AuditRecord,
    ChainVerifier,
    Checkpoint,
    Unreadable,
    record_hash,
    verify_chain,
)

T0 = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)


def chain(n: int) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    head = Checkpoint()
    for i in range(n):
        record = AuditRecord.build(
            after=head,
            at=T0 + timedelta(seconds=i),
            office="fj-province",
            person=None,
            source="127.0.0.1",
            action=AuditAction.ALERT_ISSUE,
            target=f"alert-{i + 1}",
            detail={"areas": ["35"], "n": i},
        )
        records.append(record)
        head = record.checkpoint
    return records


def kinds(problems: list[Any]) -> list[tuple[int, str]]:
    return [(p.seq, p.kind) for p in problems]


def test_a_built_chain_verifies_against_its_head() -> None:
    records = chain(5)
    assert records[0].prev == GENESIS
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert all(b.prev == a.hash for a, b in itertools.pairwise(records))
    assert verify_chain(records, head=records[-1].checkpoint) == []
    assert verify_chain([], head=Checkpoint()) == []


def test_the_hash_is_sha256_of_the_canonical_json_without_the_hash() -> None:
    record = chain(1)[0]
    assert record.hash == record_hash(record.as_json())
    assert len(record.hash) == 64
    again = AuditRecord.from_json(record.to_json())
    assert again == record
    assert '"hash"' in record.to_json()
    assert ", " not in record.to_json()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("office", "fz-gulou"),
        ("action", "alert.cancel"),
        ("target", "alert-999"),
        ("detail", {"areas": ["3501"], "n": 2}),
        ("source", "10.0.0.9"),
        ("person", "someone"),
        ("at", T0 + timedelta(hours=1)),
    ],
)
def test_an_edited_field_is_found_at_its_seq(field: str, value: Any) -> None:
    records = chain(5)
    records[2] = dataclasses.replace(records[2], **{field: value})
    assert kinds(verify_chain(records, head=records[-1].checkpoint)) == [(3, "edited")]


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link() -> None:
    records = chain(5)
    forged = dataclasses.replace(records[2], target="alert-999")
    records[2] = dataclasses.replace(forged, hash=record_hash(forged.body()))
    assert kinds(verify_chain(records, head=records[-1].checkpoint)) == [(4, "relinked")]


def test_a_removed_record_is_a_gap() -> None:
    records = chain(6)
    del records[3]
    problems = verify_chain(records, head=records[-1].checkpoint)
    assert kinds(problems) == [(4, "missing")]
    assert "records 4 are missing" in problems[0].message


def test_removed_and_renumbered_records_break_the_link() -> None:
    records = chain(5)
    # The attacker removes record 3 and renumbers the later ones, rehashing each.
    rest = [dataclasses.replace(r, seq=r.seq - 1) for r in records[3:]]
    rest = [dataclasses.replace(r, hash=record_hash(r.body())) for r in rest]
    problems = verify_chain(records[:2] + rest, head=rest[-1].checkpoint)
    assert (3, "relinked") in kinds(problems)


def test_reordered_records_are_found() -> None:
    records = chain(5)
    records[1], records[2] = records[2], records[1]
    # Record 3 where 2 should be: 2 looks missing; then 2 comes after 3.
    problems = kinds(verify_chain(records, head=records[-1].checkpoint))
    assert problems == [(2, "missing"), (2, "out_of_order")]


def test_a_removed_tail_shows_only_against_the_head() -> None:
    records = chain(5)
    head = records[-1].checkpoint
    assert verify_chain(records[:3]) == []  # without the head, a shorter chain looks whole
    problems = verify_chain(records[:3], head=head)
    assert kinds(problems) == [(4, "truncated")]
    assert "records 4-5 were removed" in problems[0].message


def test_a_replaced_last_record_shows_against_the_head() -> None:
    records = chain(3)
    forged = dataclasses.replace(records[2], target="other")
    records[2] = dataclasses.replace(forged, hash=record_hash(forged.body()))
    head = chain(3)[-1].checkpoint
    assert kinds(verify_chain(records, head=head)) == [(3, "head_mismatch")]


def test_an_unreadable_record_is_one_problem() -> None:
    records: list[AuditRecord | Unreadable] = list(chain(4))
    records[1] = Unreadable(2, "not JSON")
    assert kinds(verify_chain(records, head=chain(4)[-1].checkpoint)) == [(2, "unreadable")]


def test_verification_resumes_from_a_checkpoint_in_pages() -> None:
    records = chain(10)
    verifier = ChainVerifier()
    assert verifier.feed(records[:4]) == []
    resumed = ChainVerifier(at=verifier.at)
    assert resumed.feed(records[4:7]) == []
    assert resumed.feed(records[7:]) == []
    assert resumed.finish(records[-1].checkpoint) == []
    assert resumed.records == 6
    # A wrong checkpoint (or an edit just before the page) shows at the page's first record.
    wrong = ChainVerifier(at=Checkpoint(4, "f" * 64))
    assert kinds(wrong.feed(records[4:])) == [(5, "relinked")]


def test_details_keep_no_secrets_and_mask_phones() -> None:
    record = AuditRecord.build(
        after=Checkpoint(),
        at=datetime(2027, 3, 1, 16, 0, tzinfo=timezone(timedelta(hours=8))),
        office="fj-province",
        person=None,
        source="::1",
        action=AuditAction.CREDENTIAL_ISSUE,
        target="+8613812345678",
        detail={
            "password": "s3cret-pw",
            "nested": {"api_token": "tok-xyz", "note": "Bearer abc.def and 13912345678"},
            "phones": ["13812345678", "+4915112345678"],
            "ids": [f"t{i}" for i in range(60)],
        },
    )
    text = record.to_json()
    for secret in ("s3cret-pw", "tok-xyz", "abc.def", "13812345678", "13912345678"):
        assert secret not in text
    assert record.target == "+86138****5678"
    assert record.detail["phones"] == ["138****5678", "+4915******678"]
    assert record.detail["ids"][-1] == "… 10 more"
    assert record.at == datetime(2027, 3, 1, 8, 0, tzinfo=UTC)
    assert record.body()["at"] == "2027-03-01T08:00:00+00:00"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("[]", "not a JSON object"),
        ('{"seq": 1}', "missing"),
        ('{"seq": 1, "at": "2027-03-01T08:00:00", "office": "o", "person": null, '
         '"source": null, "action": "a", "target": "t", "detail": {}, "prev": "0", '
         '"hash": "h"}', "offset"),
    ],
)  # fmt: skip
def test_a_stored_text_that_is_not_a_record_is_refused(raw: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        AuditRecord.from_json(raw)


def test_a_time_without_offset_is_refused() -> None:
    with pytest.raises(ValueError, match="offset"):
        AuditRecord.build(
            after=Checkpoint(),
            at=datetime(2027, 3, 1),
            office="o",
            person=None,
            source=None,
            action=AuditAction.KEY_ROTATE,
            target="k",
        )
