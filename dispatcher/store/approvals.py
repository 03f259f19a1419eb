"""Submissions waiting for an approver, and those decided: one JSON string each, and an index
by submission time. A state change is a compare-and-set under WATCH, so two approvers pressing
at once cannot both issue the warning."""

from __future__ import annotations

import json
from collections.abc import Callable

from redis.exceptions import WatchError

from dispatcher.core.approval import Submission, SubmissionState
from dispatcher.core.errors import Conflict, NotFound, StoreUnavailable
from dispatcher.store.base import StoreBase
from dispatcher.store.keys import APPROVALS, IDEMPOTENCY_TTL, approval_key, idempotency_key

# Conflicting writers give up after this many tries: someone rewrites it in a loop.
_ATTEMPTS = 10


class ApprovalStore(StoreBase):
    async def add(self, submission: Submission) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(approval_key(submission.id), submission.model_dump_json())
            pipe.zadd(APPROVALS, {submission.id: int(submission.submitted_at.timestamp() * 1000)})
            await self.call(pipe.execute())

    async def remember(self, office_id: str, key: str, body: str, submission_id: str) -> None:
        """Ties an Idempotency-Key to the submission it made, as alerts' keys are tied to
        their alert: a retried submit finds it instead of submitting twice. The submission
        keeps the alert's id, so once approved a retry finds the alert."""
        record = json.dumps({"alert_id": submission_id, "body": body})
        await self.call(
            self.redis.set(idempotency_key(office_id, key), record, ex=IDEMPOTENCY_TTL, nx=True)
        )

    async def remembered(self, office_id: str, key: str, body: str) -> Submission | None:
        """The submission first made with this Idempotency-Key, if one was."""
        first = await self.idempotent_id(office_id, key, body)
        return None if first is None else await self.get(first)

    async def get(self, submission_id: str) -> Submission | None:
        if len(submission_id) > 80:
            return None
        raw = await self.call(self.redis.get(approval_key(submission_id)))
        return Submission.model_validate_json(raw) if raw else None

    async def recent(self, limit: int) -> list[Submission]:
        """The newest ``limit`` submissions, newest first."""
        ids = await self.call(self.redis.zrevrange(APPROVALS, 0, limit - 1))
        if not ids:
            return []
        raws = await self.call(self.redis.mget([approval_key(i) for i in ids]))
        return [Submission.model_validate_json(raw) for raw in raws if raw]

    async def transition(
        self,
        submission_id: str,
        expected: SubmissionState,
        change: Callable[[Submission], Submission],
    ) -> Submission:
        """Apply ``change`` to the submission if its stored state is still ``expected``;
        ``Conflict`` naming the state it is in otherwise. The changed submission."""
        key = approval_key(submission_id)
        for _attempt in range(_ATTEMPTS):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await self.call(pipe.watch(key))
                    raw = await self.call(pipe.get(key))
                    if raw is None:
                        raise NotFound(f"no submission {submission_id!r}")
                    stored = Submission.model_validate_json(raw)
                    if stored.state is not expected:
                        raise Conflict(
                            f"submission {submission_id} is {stored.state.value}, "
                            f"not {expected.value}",
                            details={"state": stored.state.value},
                        )
                    changed = change(stored)
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py lacks the hint
                    pipe.set(key, changed.model_dump_json())
                    await self.call(pipe.execute())
                    return changed
                except StoreUnavailable as exc:
                    if not isinstance(exc.__cause__, WatchError):
                        raise
        raise StoreUnavailable(f"submission {submission_id} kept changing; try again")
