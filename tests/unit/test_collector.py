"""The collector pause of imports: off while any import holds it, back on after the last,
and left off if it was off before (a caller's own choice is not overridden)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from dispatcher.core.collector import collector_paused


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_nested_and_overlapping_holders_keep_it_off_until_the_last_leaves() -> None:
    gc.enable()
    first, second = collector_paused(), collector_paused()
    first.__enter__()
    assert not gc.isenabled()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second import still builds its rows
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_an_error_inside_still_turns_it_back_on() -> None:
    gc.enable()
    with pytest.raises(ValueError, match="bad row"), collector_paused():
        raise ValueError("bad row")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
