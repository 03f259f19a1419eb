"""An alert's status, one function for every view: what replaced it wins over its expiry, and
either over how far its sending got."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from dispatcher.core.alert_status import alert_status
from dispatcher.core.models import Alert, AlertRequest, utcnow
from tests.helpers import alert_body


def _alert(msg_type: str = "alert") -> Alert:
    fields = {"msg_type": msg_type, "references": ["fj-x"] if msg_type != "alert" else []}
    request = AlertRequest.model_validate(alert_body(expires_in=3600, **fields))
    return Alert.issue(request, office_id="fj-province", office_name="省厅", areas=["350102"])


LIVE = utcnow()
LATER = LIVE + timedelta(hours=2)  # past the alert's expiry


@pytest.mark.parametrize(
    ("dispatch", "now", "expected"),
    [
        ({"state": "queued"}, LIVE, "queued"),
        ({"state": "dispatching"}, LIVE, "dispatching"),
        ({"state": "partial"}, LIVE, "partial"),
        ({"state": "dispatched"}, LIVE, "dispatched"),
        ({}, LIVE, "unknown"),
        ({"state": "<script>"}, LIVE, "unknown"),
        ({"state": "dispatched"}, LATER, "expired"),
        ({"state": "expired"}, LIVE, "expired"),
        ({"state": "dispatched", "superseded_by": "fj-u"}, LIVE, "superseded"),
        ({"state": "dispatched", "superseded_by": "fj-u"}, LATER, "superseded"),
        ({"state": "queued", "cancelled_by": "fj-c"}, LIVE, "cancelled"),
        ({"state": "dispatched", "cancelled_by": "fj-c", "superseded_by": "u"}, LATER, "cancelled"),
    ],
)
def test_the_status_of_an_alert(dispatch: dict[str, str], now: datetime, expected: str) -> None:
    assert alert_status(_alert(), dispatch, now) == expected


def test_a_cancel_is_never_shown_as_cancelled_itself() -> None:
    cancel = _alert("cancel")
    assert alert_status(cancel, {"state": "dispatched", "cancelled_by": "x"}, LIVE) == "dispatched"
