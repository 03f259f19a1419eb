"""An alert's status as every view shows it: the list, the detail, the CLI and the reports.

The dispatch record's ``state`` says how far sending got (queued, dispatching, partial,
dispatched, expired, cancelled); what ended the alert since (a cancel, an update, its expiry)
is recorded beside it, not over it. Reading ``state`` alone showed a cancelled alert as
``dispatched`` in the list while its detail said ``cancelled``: every view asks here instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final

from dispatcher.core.models import Alert, MsgType

# While the alert is live: how far sending got (the dispatch record's state).
SENDING_STATES: Final = ("queued", "dispatching", "partial", "dispatched")
# Once it ended: why. In this order of precedence.
ENDED_STATES: Final = ("cancelled", "superseded", "expired")
STATUSES: Final = (*SENDING_STATES, *ENDED_STATES, "unknown")


def alert_status(alert: Alert, dispatch: Mapping[str, str], now: datetime | None = None) -> str:
    """One of ``STATUSES``: a cancel or an update that replaced the alert wins over its expiry,
    and either over how far its sending got."""
    # A cancel's own record never names a canceller; the check keeps a cancel from reading as
    # cancelled should one ever be written there.
    if dispatch.get("cancelled_by") and alert.msg_type is not MsgType.CANCEL:
        return "cancelled"
    if dispatch.get("superseded_by"):
        return "superseded"
    if alert.expired(now):
        return "expired"
    state = dispatch.get("state", "unknown")
    # An alert dropped by the worker because a cancel came first says "cancelled" above; a
    # state from a newer engine is shown as unknown rather than passed through unchecked.
    return state if state in STATUSES else "unknown"
