"""The arithmetic of bench/scale.py that docs/scale.md rests on: lines through measured points,
cost per 10,000 terminals, and a province's or the nation's nodes from its village count."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import scale  # noqa: E402  bench/ is scripts, found once it is on the path

NODE = scale.NodeFigures(
    files_limit=20_000,
    connects_per_s=500.0,
    acks_per_s=40_000.0,
    broker_mb_empty=10.0,
    broker_mb_per_10k=200.0,
    redis_mb_empty=2.0,
    redis_mb_per_10k=16.0,
    engine_mb_empty=95.0,
    engine_mb_per_10k=30.0,
)


@pytest.mark.parametrize(
    ("points", "slope", "intercept"),
    [
        ([(0, 1.0), (10_000, 21.0)], 0.002, 1.0),
        # A size measured twice counts twice: the line goes through the middle of the two.
        ([(5_000, 10.0), (10_000, 19.0), (10_000, 21.0)], 0.002, 0.0),
        ([(1_000, 5.0), (2_000, 5.0), (3_000, 5.0)], 0.0, 5.0),
    ],
)
def test_linear_fit_finds_the_least_squares_line(
    points: list[tuple[float, float]], slope: float, intercept: float
) -> None:
    fit = scale.linear_fit(points)
    assert fit.slope == pytest.approx(slope)
    assert fit.intercept == pytest.approx(intercept, abs=1e-9)
    assert fit.per_10k == pytest.approx(slope * 10_000)
    assert fit.points == len(points)


@pytest.mark.parametrize("points", [[], [(5_000, 10.0)], [(5_000, 10.0), (5_000, 12.0)]])
def test_linear_fit_refuses_fewer_than_two_sizes(points: list[tuple[float, float]]) -> None:
    with pytest.raises(ValueError, match="two different sizes"):
        scale.linear_fit(points)


def test_cost_per_10k_uses_the_line_over_sizes_and_the_empty_process_for_one_size() -> None:
    line = [(5_000.0, 110.0), (10_000.0, 210.0)]
    assert scale.cost_per_10k(line, empty=0.0) == pytest.approx(200.0)
    # One size: (value − empty) per terminal, scaled to 10,000.
    assert scale.cost_per_10k([(5_000.0, 110.0)], empty=10.0) == pytest.approx(200.0)
    assert scale.cost_per_10k([(5_000.0, 110.0)], empty=None) is None
    assert scale.cost_per_10k([], empty=10.0) is None


@pytest.mark.parametrize(
    ("limit", "fill", "bound", "planned"),
    [(20_000, 0.5, 19_950, 9_975), (20_000, 1.0, 19_950, 19_950), (1_051, 0.5, 1_001, 500)],
)
def test_terminals_per_broker_is_the_files_limit_less_the_reserve(
    limit: int, fill: float, bound: int, planned: int
) -> None:
    assert scale.terminals_per_broker(limit, fill) == (bound, planned)


@pytest.mark.parametrize(
    ("limit", "fill", "message"),
    [
        (20_000, 0.0, "broker fill"),
        (20_000, 1.5, "broker fill"),
        (scale.RESERVED_FILES, 0.5, "no room for terminals"),
    ],
)
def test_terminals_per_broker_refuses_impossible_inputs(
    limit: int, fill: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        scale.terminals_per_broker(limit, fill)


def test_the_largest_province_is_sized_from_its_villages() -> None:
    shandong = scale.size_province(62_074, NODE, scale.Plan())
    # 19,950 terminals a broker at most, 9,975 planned: 7 brokers of 8,868 terminals each.
    assert shandong["brokers"] == 7
    assert shandong["terminals_per_broker"] == pytest.approx(62_074 / 7)
    assert shandong["acks"] == 124_148
    assert shandong["ingest_s"] == pytest.approx(124_148 / 40_000)
    assert shandong["reconnect_s"] == pytest.approx(62_074 / 7 / 500)
    assert shandong["redis_mb"] == pytest.approx(2.0 + 16.0 * 6.2074)
    assert shandong["engine_mb"] == pytest.approx(95.0 + 30.0 * 6.2074)
    assert shandong["broker_mb"] == pytest.approx(10.0 + 200.0 * 62_074 / 7 / 10_000)
    assert shandong["engines"] == 2


def test_a_plan_with_two_terminals_per_village_doubles_the_load() -> None:
    one = scale.size_province(17_498, NODE, scale.Plan())
    two = scale.size_province(17_498, NODE, scale.Plan(terminals_per_village=2))
    assert two["terminals"] == 2 * one["terminals"]
    assert two["acks"] == 2 * one["acks"]
    assert two["brokers"] == math.ceil(34_996 / 9_975)


def test_the_nation_adds_up_its_31_provinces() -> None:
    assert len(scale.PROVINCE_VILLAGES) == 31
    assert sum(v for _, v in scale.PROVINCE_VILLAGES.values()) == 620_573
    # Fujian's count is the region file's own.
    assert scale.PROVINCE_VILLAGES["35"][1] == 17_498
    nation = scale.size_nation(scale.PROVINCE_VILLAGES, NODE, scale.Plan())
    assert nation["terminals"] == 620_573
    assert nation["acks"] == 2 * 620_573
    assert nation["engines"] == 62
    assert nation["brokers"] == sum(r["brokers"] for r in nation["provinces"].values())
    # Provinces ingest side by side: the wave is as long as Shandong's, not the sum.
    assert nation["ingest_s_per_province_max"] == pytest.approx(124_148 / 40_000)
    assert nation["ingest_s_one_engine"] == pytest.approx(2 * 620_573 / 40_000)


def test_quick_fills_only_the_sizes_left_out() -> None:
    args = argparse.Namespace(
        quick=True, sizes=None, bridge_terminals=0, bridge_runs=None, probes=None,
        storm_terminals=None, storm_runs=None,
    )  # fmt: skip
    scale.fill_defaults(args)
    assert args.sizes == scale.QUICK["sizes"]
    assert args.bridge_terminals == 0  # given: kept
    assert args.storm_terminals == scale.QUICK["storm_terminals"]
    full = argparse.Namespace(quick=False, **dict.fromkeys(scale.FULL))
    assert vars(scale.fill_defaults(full)) == {"quick": False, **scale.FULL}
