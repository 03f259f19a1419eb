"""Each office's edits of the built-in warning templates (``keys.template_edits_key``)."""

from __future__ import annotations

import json
from typing import Any

from dispatcher.store.base import StoreBase
from dispatcher.store.keys import template_edits_key


class TemplateStore(StoreBase):
    """On the engine store's client: ``TemplateStore(store.redis)``."""

    async def edits(self, office_id: str) -> dict[str, dict[str, Any]]:
        """Template id → the office's edit of it."""
        raw: dict[str, str] = await self.call(self.redis.hgetall(template_edits_key(office_id)))
        return {template_id: json.loads(edit) for template_id, edit in raw.items()}

    async def edit(self, office_id: str, template_id: str) -> dict[str, Any] | None:
        raw = await self.call(self.redis.hget(template_edits_key(office_id), template_id))
        return None if raw is None else dict(json.loads(raw))

    async def put_edit(self, office_id: str, template_id: str, changes: dict[str, Any]) -> None:
        await self.call(
            self.redis.hset(
                template_edits_key(office_id),
                template_id,
                json.dumps(changes, ensure_ascii=False, separators=(",", ":")),
            )
        )

    async def reset(self, office_id: str, template_id: str) -> bool:
        """Drop the office's edit; False if it had none."""
        return bool(await self.call(self.redis.hdel(template_edits_key(office_id), template_id)))
