"""The provisioning file: what the engine handed out when terminals were registered (their
passwords, the broker's address and CA, the keyring), as ``ebd terminals import
--credentials-out`` and ``ebd demo`` write it and ``ebd sim --provision`` reads it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatcher.core.errors import ConfigError
from dispatcher.core.signing import Keyring
from dispatcher.embedded.secrets import write_private


@dataclass(frozen=True, slots=True)
class Provisioning:
    """A file of what the engine handed out at registration (``ebd terminals import`` and the
    demo write it): the terminals' passwords, the broker's address and CA, the keyring."""

    url: str
    ca_pem: str
    keyring: Keyring
    passwords: dict[str, str]


def read_provisioning(path: Path) -> Provisioning:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        broker = body["broker"]
        return Provisioning(
            url=str(broker["url"]),
            ca_pem=str(broker.get("ca_pem") or ""),
            keyring=Keyring.from_json(json.dumps(body["keyring"])),
            passwords={str(c["id"]): str(c["password"]) for c in body.get("credentials", [])},
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            "not a provisioning file (the JSON that `ebd terminals import "
            f"--credentials-out` writes): {exc}",
            path=path,
        ) from exc


def write_provisioning(path: Path, answers: list[dict[str, Any]]) -> None:
    """The registration answers as one provisioning file, readable by its owner alone (it
    holds passwords)."""
    merged: dict[str, Any] = {"credentials": []}
    for answer in answers:
        merged["credentials"] += answer.get("credentials", [])
        merged["broker"] = answer.get("broker", {})
        merged["keyring"] = answer.get("keyring", {})
    write_private(path, json.dumps(merged, ensure_ascii=False, indent=1))
