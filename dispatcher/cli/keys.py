"""``ebd keys rotate``: a new signing key, the old one kept in the keyring for an overlap.

Run it on the engine's machine (it writes the key files of the settings' state folder or
``[signing]``); the engine signs with the new key from its next start, and terminals must get
the new keyring (``GET /api/v1/keyring``, or with their next credentials) before the overlap
ends. The rotation is appended to the audit log.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
from datetime import timedelta
from pathlib import Path

from dispatcher.core.audit import AuditAction
from dispatcher.core.redis_access import RedisAccess
from dispatcher.embedded.access import redis_access
from dispatcher.embedded.signing_keys import rotate_keys
from dispatcher.settings import load_settings
from dispatcher.store.store import Store


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    config = Path(args.config) if args.config else None
    settings = load_settings(config)
    overlap = timedelta(days=args.overlap_days)
    old, new = rotate_keys(settings.signing, settings.state_dir.resolve(), overlap, args.algorithm)
    print(f"signing key {old} → {new}; {old} stays in the keyring for {args.overlap_days:g} days")
    if settings.redis.url or settings.redis.sentinels:
        # The engine's own way to its Redis: the password file, or the sentinels' primary.
        asyncio.run(_record(redis_access(settings.redis, None), old, new, args.overlap_days))
    else:
        print(
            "(no redis.url or sentinels: the rotation is not in the audit log; record it by hand)"
        )
    return 0


async def _record(access: RedisAccess, old: str, new: str, overlap_days: float) -> None:
    store = Store.from_access(access)
    try:
        await store.audit.record(
            office="operator",
            person=getpass.getuser(),
            source=socket.gethostname(),
            action=AuditAction.KEY_ROTATE,
            target=new,
            detail={"old": old, "new": new, "overlap_days": overlap_days},
        )
    finally:
        await store.close()
