"""People for tests: a person created through the real accounts API, with an API token.

token = await add_person(api.session, str(api.make_url("")), "tok-gulou", "gl.composer",
                         ["composer"])
headers = {"Authorization": f"Bearer {token}"}
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aiohttp

DEFAULT_PASSWORD = "correct-horse-battery"


async def add_person(
    session: aiohttp.ClientSession,
    base_url: str,
    office_token: str,
    person_id: str,
    roles: Iterable[str],
    password: str = DEFAULT_PASSWORD,
    name: str | None = None,
) -> str:
    """Create ``person_id`` in the office of ``office_token`` with ``roles`` (as that office's
    token, which acts as its admin) and return a fresh API token of that person."""
    base = base_url.rstrip("/")
    auth = {"Authorization": f"Bearer {office_token}"}
    body: dict[str, Any] = {
        "id": person_id,
        "name": name or person_id,
        "roles": list(roles),
        "password": password,
    }
    async with session.post(f"{base}/api/v1/people", json=body, headers=auth) as response:
        assert response.status == 201, await response.text()
    async with session.post(f"{base}/api/v1/people/{person_id}/tokens", headers=auth) as response:
        assert response.status == 201, await response.text()
        token: str = (await response.json())["token"]
    return token


async def sign_in(
    session: aiohttp.ClientSession, base_url: str, person_id: str, password: str = DEFAULT_PASSWORD
) -> str:
    """Sign ``person_id`` in on ``session`` (its cookie jar keeps the session cookie); the
    CSRF token to send as ``X-CSRF-Token`` with changes."""
    body = {"login": person_id, "password": password}
    async with session.post(f"{base_url.rstrip('/')}/api/v1/session", json=body) as response:
        assert response.status == 200, await response.text()
        csrf: str = (await response.json())["csrf"]
    return csrf
