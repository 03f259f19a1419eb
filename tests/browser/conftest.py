"""Fixtures of the console's browser tests: a real engine (Redis, broker, simulated terminals
as the integration tests build them) and headless Chromium driven by Playwright.

Debian's ``chromium`` is the browser (``make optional`` installs it); without it, or without
the ``playwright`` package, the tests skip saying so. ``EBD_SCREENSHOTS=<dir>`` (``make
screenshots``) saves PNGs of the main pages there."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.engine import Client, running_engine

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

# Read at import: the suite's autouse fixture clears EBD_ variables before each test.
SCREENSHOTS = os.environ.get("EBD_SCREENSHOTS")
CHROMIUM = shutil.which("chromium")


@pytest.fixture
async def engine(redis_url: str, mqtt_url: str, tmp_path: Path) -> AsyncIterator[Client]:
    """The engine app on a free port, as the integration tests run it."""
    async with running_engine(redis_url, mqtt_url, tmp_path / "state") as client:
        yield client


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (sudo apt-get install chromium, or make optional)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("the playwright package is missing (pip install -e '.[dev]')")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Browser, engine: Client, **options: Any) -> Page:
    """A fresh browser context (its own cookies) on the engine, with a laptop's screen."""
    context = await browser.new_context(
        base_url=str(engine.make_url("")).rstrip("/"),
        viewport=options.pop("viewport", {"width": 1280, "height": 900}),
        locale="zh-CN",
        **options,
    )
    context.set_default_timeout(15_000)
    page = await context.new_page()
    # A script error on a page fails the test that saw it.
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]  # read by the tests
    return page


async def shot(page: Page, name: str) -> None:
    """A full-page screenshot ``<name>.png`` when screenshots are asked for."""
    if SCREENSHOTS:
        folder = Path(SCREENSHOTS)
        folder.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  a local folder, once
        await page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
