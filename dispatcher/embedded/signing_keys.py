"""The engine's signing key and the keyring terminals are given, kept in the state folder.

The key is made on the first start (``keys/signing-key.json``, 0600) unless the settings name
one; the keyring (``keys/keyring.json``) lists its public key and, during a rotation's overlap,
the retired one, which terminals keep accepting until its ``not_after``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dispatcher.core.config import SigningSettings
from dispatcher.core.errors import ConfigError
from dispatcher.core.signing import Keyring, KeyringError, Signer, SigningKey, rotate
from dispatcher.embedded.secrets import private_folder


@dataclass(frozen=True, slots=True)
class EngineKeys:
    signer: Signer
    keyring: Keyring
    key_file: Path
    keyring_file: Path


def key_paths(settings: SigningSettings, state_dir: Path) -> tuple[Path, Path]:
    folder = state_dir / "keys"
    return (
        settings.key_file or folder / "signing-key.json",
        settings.keyring_file or folder / "keyring.json",
    )


def engine_keys(settings: SigningSettings, state_dir: Path) -> EngineKeys:
    """The signer and keyring, made on the first start; the keyring always holds the key."""
    key_file, keyring_file = key_paths(settings, state_dir)
    try:
        if key_file.exists():
            key = SigningKey.load(key_file)
        else:
            private_folder(key_file.parent)
            key = SigningKey.generate(settings.algorithm)
            key.save(key_file)
        keyring = Keyring.load(keyring_file) if keyring_file.exists() else Keyring([])
    except (KeyringError, ValueError, OSError) as exc:
        raise ConfigError(f"the signing key or keyring is unusable: {exc}", path=key_file) from exc
    if keyring.get(key.kid) is None:
        keyring = Keyring([*keyring.keys, key.public()], keyring.allowed)
        private_folder(keyring_file.parent)
        keyring.save(keyring_file)
    return EngineKeys(Signer(key), keyring, key_file, keyring_file)


def rotate_keys(
    settings: SigningSettings, state_dir: Path, overlap: timedelta, algorithm: str | None = None
) -> tuple[str, str]:
    """A new signing key; the old one stays in the keyring for ``overlap``. The engine signs
    with the new key from its next start; terminals must get the new keyring before the old
    key's overlap ends. Returns (old kid, new kid)."""
    keys = engine_keys(settings, state_dir)
    old = keys.signer.kid
    new_key = SigningKey.generate(algorithm or settings.algorithm)
    keyring = rotate(keys.keyring, old, new_key.public(), overlap, datetime.now(UTC))
    keyring.save(keys.keyring_file)
    new_key.save(keys.key_file)
    return old, new_key.kid
