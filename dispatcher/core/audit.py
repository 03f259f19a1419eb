"""The audit log's records and their chain: each record names the hash of the one before it,
so an edited, removed or reordered record shows when the chain is walked again.

Pure: no I/O. ``dispatcher.store.audit`` appends and reads records; this module builds them,
hashes them and verifies a chain, in pages if the log is long (``ChainVerifier``).

A record's hash is SHA-256 over the canonical JSON of every field but ``hash`` (keys sorted,
no spaces, UTF-8): ``record_hash``. The first record's ``prev`` is ``GENESIS`` (64 zeros).
Removing the tail of the log leaves an intact chain; only the head kept beside the log (the
last seq and hash, ``Checkpoint``) shows it, which is why ``verify_chain`` takes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NotRequired, TypedDict, Unpack

from dispatcher.core.masking import SECRET_MASK, mask

GENESIS = "0" * 64

# A detail stays small: what changed, not the whole payload.
_MAX_LIST = 50
_MAX_TEXT = 300
_MAX_DEPTH = 4
_SECRET_WORDS = ("password", "passwd", "secret", "token", "private_key", "api_key", "credential")


class AuditAction(StrEnum):
    """Every state-changing action the log records."""

    ALERT_ISSUE = "alert.issue"
    ALERT_UPDATE = "alert.update"
    ALERT_CANCEL = "alert.cancel"
    ALERT_DRAFT = "alert.draft"
    ALERT_SUBMIT = "alert.submit"
    ALERT_APPROVE = "alert.approve"
    ALERT_REJECT = "alert.reject"
    TERMINAL_REGISTER = "terminal.register"
    TERMINAL_MOVE = "terminal.move"
    TERMINAL_DELETE = "terminal.delete"
    CREDENTIAL_ISSUE = "credential.issue"
    CREDENTIAL_REVOKE = "credential.revoke"
    RECIPIENT_IMPORT = "recipient.import"
    RECIPIENT_DELETE = "recipient.delete"
    DRILL_PLAN = "drill.plan"
    DRILL_EDIT = "drill.edit"
    DRILL_RUN_NOW = "drill.run_now"
    KEY_ROTATE = "key.rotate"
    TEMPLATE_EDIT = "template.edit"
    TEMPLATE_RESET = "template.reset"
    PERSON_CREATE = "person.create"
    PERSON_DISABLE = "person.disable"
    PERSON_ENABLE = "person.enable"
    PERSON_PASSWORD = "person.password"  # noqa: S105  # an action's name, no secret
    PERSON_TOKEN_ISSUE = "person.token_issue"  # noqa: S105  # an action's name, no secret
    PERSON_TOKEN_REVOKE = "person.token_revoke"  # noqa: S105  # an action's name, no secret


class AuditEntry(TypedDict):
    """Who did what, from where: a record's fields that its caller gives."""

    office: str
    # The person, once accounts exist; None until then.
    person: str | None
    # Where the request came from (the client's address, or the host of a CLI run).
    source: str | None
    action: AuditAction | str
    target: str
    detail: NotRequired[Mapping[str, Any] | None]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a chain stands: the last record's seq and hash (seq 0 and ``GENESIS``: empty)."""

    seq: int = 0
    hash: str = GENESIS


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    at: datetime
    office: str
    person: str | None
    source: str | None
    action: str  # an AuditAction's value; kept a str so a record from a newer engine still reads
    target: str
    detail: dict[str, Any]
    prev: str
    hash: str

    def body(self) -> dict[str, Any]:
        """Every field but ``hash``, as JSON values: what the hash covers."""
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "office": self.office,
            "person": self.person,
            "source": self.source,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
            "prev": self.prev,
        }

    def as_json(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash}

    def to_json(self) -> str:
        return canonical_json(self.as_json())

    @classmethod
    def from_json(cls, raw: str | bytes) -> AuditRecord:
        """A stored record; ``ValueError`` naming what is wrong if it is not one."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            at = datetime.fromisoformat(data["at"])
            record = cls(
                seq=data["seq"],
                at=at,
                office=data["office"],
                person=data["person"],
                source=data["source"],
                action=data["action"],
                target=data["target"],
                detail=data["detail"],
                prev=data["prev"],
                hash=data["hash"],
            )
        except KeyError as exc:
            raise ValueError(f"field {exc.args[0]!r} missing") from exc
        except TypeError as exc:
            raise ValueError(str(exc)) from exc
        if not isinstance(record.seq, int) or isinstance(record.seq, bool):
            raise ValueError("seq is not an integer")
        if at.tzinfo is None:
            raise ValueError("at has no offset")
        return record

    @classmethod
    def build(
        cls,
        *,
        after: Checkpoint,
        at: datetime,
        **entry: Unpack[AuditEntry],
    ) -> AuditRecord:
        """The record that follows ``after``, its detail cleaned (``clean_detail``), hashed."""
        if at.tzinfo is None:
            raise ValueError("an audit record's time needs its offset")
        body = {
            "seq": after.seq + 1,
            "at": at.astimezone(UTC).isoformat(),
            "office": entry["office"],
            "person": entry["person"],
            "source": entry["source"],
            "action": str(entry["action"]),
            "target": _clean(entry["target"], 0),
            "detail": clean_detail(entry.get("detail") or {}),
            "prev": after.hash,
        }
        # Built from the JSON form, so what is hashed now is what a reader parses back.
        return cls.from_json(canonical_json({**body, "hash": record_hash(body)}))

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.seq, self.hash)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a record's fields but ``hash``, as canonical JSON."""
    fields = {k: v for k, v in body.items() if k != "hash"}
    return hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()


def clean_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    """A detail fit for the log: values under a secret-sounding key replaced by the mask,
    phone numbers and inline secrets masked in every string, long texts and lists cut."""
    cleaned = _clean(dict(detail), 0)
    assert isinstance(cleaned, dict)  # noqa: S101  a dict in, a dict out
    return cleaned


def _clean(value: Any, depth: int) -> Any:
    if isinstance(value, Mapping):
        if depth >= _MAX_DEPTH:
            return "…"
        return {
            str(k): SECRET_MASK if _secret_key(str(k)) else _clean(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
        out = [_clean(v, depth + 1) for v in items[:_MAX_LIST]]
        if len(items) > _MAX_LIST:
            out.append(f"… {len(items) - _MAX_LIST} more")
        return out
    if isinstance(value, str):
        text = mask(value)
        return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "…"
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _clean(str(value), depth)


def _secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A stored slot whose text is not a record (edited into garbage)."""

    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong at ``seq``. ``kind``: edited (its hash does not match its fields),
    missing (a gap in the seqs), relinked (its ``prev`` is not the previous record's hash:
    the record before it was replaced or removed and the rest renumbered), out_of_order,
    unreadable, truncated (the log ends before the head kept beside it)."""

    seq: int
    kind: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "message": self.message}


@dataclass(slots=True)
class ChainVerifier:
    """Walks a chain in pages: ``feed`` each page in seq order, then ``finish`` with the head.

    Start from a ``Checkpoint`` remembered from an earlier run to verify only what came after.
    After a problem the walk goes on from the record as stored, so one edit is one problem.
    """

    at: Checkpoint = field(default_factory=Checkpoint)
    records: int = 0
    # False after an unreadable record: the next one's prev cannot be checked.
    _linked: bool = True

    def feed(self, records: Iterable[AuditRecord | Unreadable]) -> list[Problem]:
        problems: list[Problem] = []
        for record in records:
            problems.extend(self._check(record))
        return problems

    def _check(self, record: AuditRecord | Unreadable) -> list[Problem]:
        expected = self.at.seq + 1
        if isinstance(record, Unreadable):
            self.at = Checkpoint(record.seq, GENESIS)
            self._linked = False
            return [Problem(record.seq, "unreadable", f"record {record.seq}: {record.reason}")]
        self.records += 1
        problems = []
        if record.seq <= self.at.seq:
            problems.append(
                Problem(
                    record.seq,
                    "out_of_order",
                    f"record {record.seq} comes after record {self.at.seq}",
                )
            )
        elif record.seq > expected:
            gap = f"{expected}" if record.seq == expected + 1 else f"{expected}-{record.seq - 1}"
            problems.append(Problem(expected, "missing", f"records {gap} are missing"))
        elif self._linked and record.prev != self.at.hash:
            problems.append(
                Problem(
                    record.seq,
                    "relinked",
                    f"record {record.seq} does not follow the hash of record {self.at.seq}: "
                    "a record before it was replaced or removed",
                )
            )
        if record_hash(record.body()) != record.hash:
            problems.append(
                Problem(
                    record.seq,
                    "edited",
                    f"record {record.seq} was changed after it was written (hash mismatch)",
                )
            )
        if record.seq > self.at.seq:
            self.at = record.checkpoint
        self._linked = True
        return problems

    def finish(self, head: Checkpoint | None) -> list[Problem]:
        """Problems of the log's end against the ``head`` kept beside it (None: not known)."""
        if head is None or head == self.at:
            return []
        if head.seq > self.at.seq:
            return [
                Problem(
                    self.at.seq + 1,
                    "truncated",
                    f"the log ends at record {self.at.seq} but its head says {head.seq}: "
                    f"records {self.at.seq + 1}-{head.seq} were removed",
                )
            ]
        if head.seq < self.at.seq:
            return [
                Problem(
                    head.seq,
                    "head_mismatch",
                    f"the log goes on to record {self.at.seq} past its head {head.seq}",
                )
            ]
        return [
            Problem(
                head.seq,
                "head_mismatch",
                f"record {head.seq}'s hash is not the one the head kept: it was replaced",
            )
        ]


def verify_chain(
    records: Iterable[AuditRecord | Unreadable],
    *,
    head: Checkpoint | None = None,
    start: Checkpoint | None = None,
) -> list[Problem]:
    """Every problem of ``records`` (in seq order, from just after ``start``) and of their
    end against ``head``; empty when the chain is intact."""
    verifier = ChainVerifier(at=start or Checkpoint())
    return verifier.feed(records) + verifier.finish(head)
