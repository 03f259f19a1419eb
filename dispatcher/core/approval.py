"""Approval: which warnings need a second person before they go, and a submission's life.

Pure: no I/O. A submission is an alert request that waits for an approver:

    draft ──submit──▶ pending ──approve──▶ approved ──issued──▶ sent
                         │
                         ├──reject (reason)──▶ rejected
                         └──expires_minutes pass──▶ expired

By default actual red and orange warnings need one (``[approval] colours``; an office may set
its own ``approval_colours``); exercises, tests and cancels never do, so a drill or a cancel
never waits. People always submit; an office token (a machine) does too unless its office is
``machine_approved`` (a linked release system whose alerts were approved upstream).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from dispatcher.core.config import OfficeConfig, Section
from dispatcher.core.errors import Conflict, EbdError
from dispatcher.core.models import AlertRequest, MsgType, Severity, Status, plain_text, utcnow

MAX_REASON = 200


class ApprovalSettings(Section):
    """``[approval]``: what needs a second person, and how long a submission waits for one."""

    colours: list[Severity] = Field(default_factory=lambda: [Severity.RED, Severity.ORANGE])
    expires_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)


class PreviewRequired(EbdError, code="preview_required", status=428):
    """A person sent a warning without the preview it was checked against."""


class PreviewStale(Conflict, code="preview_stale"):
    """What is sent differs from what the preview showed."""


class SubmissionState(StrEnum):
    DRAFT = "draft"
    PENDING = "pending"
    APPROVED = "approved"  # taken by an approver, being issued
    REJECTED = "rejected"
    EXPIRED = "expired"
    SENT = "sent"


class Submission(BaseModel):
    """A warning waiting for (or decided by) an approver; ``id`` is the alert's id once sent."""

    model_config = ConfigDict(extra="forbid")

    id: str
    state: SubmissionState
    office_id: str
    office_name: str
    office_region: str
    # The person who composed it; None when an office token (a machine) submitted it.
    composer: str | None
    composer_name: str | None
    # The alert request as submitted (``preview_id`` taken out), issued as it is on approval.
    body: dict[str, Any]
    cover: list[str]
    severity: Severity
    headline: str
    preview_id: str
    preview: dict[str, Any]
    submitted_at: AwareDatetime
    expires_at: AwareDatetime
    decided_at: AwareDatetime | None = None
    decided_by: str | None = None
    decided_by_name: str | None = None
    decided_by_office: str | None = None
    reason: str | None = None
    sent_at: AwareDatetime | None = None

    def current(self, now: datetime | None = None) -> Submission:
        """As it stands at ``now``: a pending one past its time is expired."""
        if self.state is SubmissionState.PENDING and self.expires_at <= (now or utcnow()):
            return self.model_copy(update={"state": SubmissionState.EXPIRED})
        return self


class RejectRequest(BaseModel):
    """``POST /api/v1/approvals/{id}/reject``: why, for the composer (required)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = Field(min_length=1, max_length=MAX_REASON)

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        plain_text(value, multiline=True)
        return value


class ApprovalPolicy:
    """Whether a request needs an approver, by the office's settings and the global default."""

    def __init__(self, settings: ApprovalSettings, offices: Iterable[OfficeConfig]) -> None:
        self.settings = settings
        self._offices = {office.id: office for office in offices}

    def colours(self, office_id: str) -> frozenset[Severity]:
        office = self._offices.get(office_id)
        own = office.approval_colours if office is not None else None
        return frozenset(self.settings.colours if own is None else own)

    def needed(self, office_id: str, request: AlertRequest, *, by_person: bool) -> bool:
        if request.msg_type is MsgType.CANCEL or request.status is not Status.ACTUAL:
            return False
        if request.severity not in self.colours(office_id):
            return False
        if by_person:
            return True
        office = self._offices.get(office_id)
        # Fail-closed: an office this policy does not know is not trusted to skip approval.
        return office is None or not office.machine_approved

    def expiry(self, submitted_at: datetime) -> datetime:
        return submitted_at + timedelta(minutes=self.settings.expires_minutes)
