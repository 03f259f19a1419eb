"""Engines as separate processes (``tests.support.engine_process``) the way the chaos tests run
them: two instances sharing one Redis and broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import unique
from tests.support.engine_process import EngineProcess


def two_instances(
    tmp_path: Path, redis_url: str, mqtt_url: str, **options: Any
) -> tuple[EngineProcess, EngineProcess]:
    """Engines ebd-a and ebd-b on one Redis and broker, sharing the acks (a shared
    subscription), each with an MQTT client id of its own (the session broker is shared with
    other tests); ``options`` as ``EngineProcess`` takes them. Not started."""
    a, b = (
        EngineProcess(
            tmp_path,
            redis_url=redis_url,
            mqtt_url=mqtt_url,
            instance=name,
            shared_subscription=True,
            client_id=unique(name),
            **options,
        )
        for name in ("ebd-a", "ebd-b")
    )
    return a, b
