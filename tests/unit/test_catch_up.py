"""A terminal catching up after a reconnect: of the burst the broker kept for it, only what is
still in force plays, each chain's newest version once; acks go out at once."""

from __future__ import annotations

from datetime import timedelta

from receiver.brain import TerminalBrain
from tests.unit.test_brain import T0, alert, brain, cancel, deliver, summary, update

NOW = T0 + timedelta(minutes=30)
MS = timedelta(milliseconds=1)


def catching_up(b: TerminalBrain | None = None) -> TerminalBrain:
    b = b or brain()
    b.start_catch_up(NOW)
    return b


def test_an_alert_updated_later_in_the_burst_never_sounds_and_the_update_plays_once() -> None:
    b = catching_up()
    assert deliver(b, alert("a1"), now=NOW) == ["ack a1 received"]
    update_sent = T0 + timedelta(minutes=10)
    assert deliver(b, update("u1", ["a1"], update_sent), now=NOW + MS) == [
        "ack a1 failed superseded",
        "ack u1 received",
    ]
    assert b.catch_up_due() == NOW + MS + b.catch_up_quiet
    assert summary(b.end_catch_up(NOW + 400 * MS)) == ["play u1"]
    assert not b.catching_up
    # A re-delivery afterwards (an engine resend) is answered from memory, never played.
    assert deliver(b, update("u1", ["a1"], update_sent), now=NOW + 500 * MS) == [
        "ack u1 received (repeat)"
    ]


def test_a_chain_alert_update_update_plays_only_its_newest_version() -> None:
    b = catching_up()
    deliver(b, alert("a1"), now=NOW)
    deliver(b, update("u1", ["a1"], T0 + timedelta(minutes=5)), now=NOW)
    deliver(b, update("u2", ["u1"], T0 + timedelta(minutes=9)), now=NOW)
    assert summary(b.end_catch_up(NOW + MS)) == ["play u2"]


def test_a_chain_cancelled_in_the_burst_plays_nothing_and_its_cancel_is_acked_silent() -> None:
    b = catching_up()
    deliver(b, alert("a2"), now=NOW)
    assert deliver(b, cancel("c2", ["a2"], T0 + timedelta(minutes=3)), now=NOW) == [
        "ack a2 failed cancelled",
        "ack c2 received",
    ]
    assert summary(b.end_catch_up(NOW + MS)) == ["ack c2 played silent"]
    assert b.last_ack("c2") is not None


def test_a_cancel_of_a_warning_this_terminal_sounded_before_it_went_away_is_announced() -> None:
    b = brain()
    before = T0 + timedelta(minutes=1)
    assert deliver(b, alert("a3"), now=before) == ["ack a3 received", "play a3"]
    b.begin("a3", before)
    b.finished("a3", before + timedelta(seconds=30))
    catching_up(b)
    deliver(b, update("u3", ["a3"], T0 + timedelta(minutes=5)), now=NOW)
    deliver(b, cancel("c3", ["u3"], T0 + timedelta(minutes=9)), now=NOW)
    # u3 never sounded, but a3 did: the village must hear the warning is lifted.
    assert summary(b.end_catch_up(NOW + MS)) == ["play c3"]


def test_a_cancel_of_an_alert_never_seen_is_silent_only_while_catching_up() -> None:
    b = catching_up()
    deliver(b, cancel("c4", ["gone"], T0 + timedelta(minutes=3)), now=NOW)
    assert summary(b.end_catch_up(NOW + MS)) == ["ack c4 played silent"]
    live = brain()
    assert deliver(live, cancel("c5", ["gone"], T0 + timedelta(minutes=3)), now=NOW) == [
        "ack c5 received",
        "play c5",
    ]


def test_an_alert_that_expires_before_the_burst_settles_is_acked_expired_not_played() -> None:
    b = catching_up()
    short = alert("a6", expires=(NOW + 100 * MS).isoformat())
    assert deliver(b, short, now=NOW) == ["ack a6 received"]
    assert summary(b.end_catch_up(NOW + 200 * MS)) == ["ack a6 failed expired"]


def test_an_expired_alert_in_the_burst_is_never_played() -> None:
    b = catching_up()
    old = alert("a7", expires=(NOW - MS).isoformat())
    assert deliver(b, old, now=NOW) == ["ack a7 failed expired"]
    assert summary(b.end_catch_up(NOW + MS)) == []


def test_the_burst_window_moves_with_each_message_but_never_past_its_limit() -> None:
    b = catching_up()
    assert b.catch_up_due() == NOW + b.catch_up_quiet
    later = NOW + b.catch_up_max - 100 * MS
    deliver(b, alert("a8"), now=later)
    assert b.catch_up_due() == NOW + b.catch_up_max
    assert summary(b.end_catch_up(NOW + b.catch_up_max)) == ["play a8"]
    assert b.catch_up_due() is None


def test_outside_a_catch_up_an_alert_plays_at_once() -> None:
    b = brain()
    assert b.catch_up_due() is None
    assert deliver(b, alert("a9"), now=NOW) == ["ack a9 received", "play a9"]
