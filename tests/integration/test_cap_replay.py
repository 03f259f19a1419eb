"""``ebd cap replay`` as a regression test (issue 16, item 6): the real CAP samples and
generated alert → update → cancel chains replayed against the simulated villages of a
township, with an engine of its own (embedded mosquitto and redis-server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.cli.cap_replay import archive, generated, replay, report_rows
from dispatcher.core.regions import RegionTree
from tests.helpers import FUJIAN_FILE, ROOT, fujian
from tests.integration.engine import ebd

SAMPLES = ROOT / "tests" / "data" / "cap"
TOWNSHIP = "350102001"  # 鼓楼区鼓东街道: 5 villages


@pytest.fixture(scope="module")
def tree() -> RegionTree:
    return fujian()


# Each sample's row: why the engine refused it (a phrase of its reason).
REFUSED = {
    "google-australia.cap.xml": "given only as a circle",
    "google-canada.cap.xml": "reference cap@ec.gc.ca",
    "google-canada_errors.cap.xml": "must name in <references>",
    "google-canada_signed.cap.xml": "reference cap-pac@ec.gc.ca",
    "google-earthquake.cap.xml": "this is CAP 1.1",
    "google-earthquake_signed.cap.xml": "this is CAP 1.1",
    "google-invalid.cap.xml": "not valid CAP 1.2",
    "tannerryan-Oasis_AmberAlert.xml": "given only as geocodes SAME",
    "tannerryan-Oasis_EarthquakeReport.xml": "reference trinet@caltech.edu",
    "tannerryan-Oasis_HomelandAlert.xml": "is given only as",
    "tannerryan-Oasis_ThunderstormWarning.xml": "is given only as",
    "tannerryan-PelmorexNAADS_WindWarning.xml": "reference cap-pac@canada.ca",
}


async def test_the_samples_are_refused_with_reasons_and_each_chain_plays_then_stops(
    tree: RegionTree, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    messages = archive([SAMPLES]) + generated(tree, TOWNSHIP, 2, datetime.now(UTC))
    # A long play: each update and cancel comes while what it replaces is still playing.
    outcomes = await replay(
        messages,
        region=TOWNSHIP,
        regions_file=FUJIAN_FILE,
        state_dir=tmp_path,
        tree=tree,
        play_time=30.0,
    )
    rows = report_rows(outcomes)
    assert rows[0] == ["#", "message", "type", "result", "sent to", "sounded", "failed", "reason"]
    samples = rows[1:13]
    assert [row[1] for row in samples] == sorted(REFUSED)
    for row, outcome in zip(samples, outcomes, strict=False):
        assert row[2:7] == ["?", "refused", "", "", ""], row
        assert outcome.reason is not None
        assert REFUSED[row[1]] in outcome.reason, outcome
        assert row[7] == outcome.reason[:120]  # the table's column; --json has it whole
    # Chain 1 is for the township (its 5 villages), chain 2 for its first village. The alert
    # and the update sound everywhere and are each stopped by the next message of the chain
    # (acked failed); the cancel is announced, since its warning was heard.
    assert [row[1:7] for row in rows[13:]] == [
        ["chain-1 alert", "alert", "accepted", "5", "5", "5"],
        ["chain-1 update", "update", "accepted", "5", "5", "5"],
        ["chain-1 cancel", "cancel", "accepted", "5", "5", "0"],
        ["chain-2 alert", "alert", "accepted", "1", "1", "1"],
        ["chain-2 update", "update", "accepted", "1", "1", "1"],
        ["chain-2 cancel", "cancel", "accepted", "1", "1", "0"],
    ]
    chain = outcomes[12:15]
    villages = {f"sim-{code}-1" for code in tree.villages(TOWNSHIP)}
    assert all(o.played_by == dict.fromkeys(villages, 1) for o in chain)
    assert all(o.reason is None and o.alert_id for o in chain)


async def test_with_instant_playback_every_message_of_a_chain_plays_once_and_none_fails(
    tree: RegionTree, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    outcomes = await replay(
        generated(tree, TOWNSHIP, 1, datetime.now(UTC)),
        region=TOWNSHIP,
        regions_file=FUJIAN_FILE,
        state_dir=tmp_path,
        tree=tree,
    )
    assert [row[1:7] for row in report_rows(outcomes)[1:]] == [
        ["chain-1 alert", "alert", "accepted", "5", "5", "0"],
        ["chain-1 update", "update", "accepted", "5", "5", "0"],
        ["chain-1 cancel", "cancel", "accepted", "5", "5", "0"],
    ]
    assert [o.acked_played for o in outcomes] == [5, 5, 5]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--region", "999999"], "unknown region code 999999"),
        ([], "nothing to replay: give CAP files or --generate N"),
        (["no-such-file.xml"], "cannot read"),
    ],
)
async def test_bad_arguments_are_refused_before_any_engine_starts(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await ebd("--lang", "en", "cap", "replay", *argv) == 2
    assert message in capsys.readouterr().out
