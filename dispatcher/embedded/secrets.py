"""Secrets the embedded default makes for itself on its first start, in its state folder.

Each secret is a file of its own, readable by its owner alone (0600, in a 0700 folder), made
once and read on every later start: a restarted broker or Redis must accept what the engine
and the terminals were given before. A secret never goes on a command line (``ps`` shows those
to every user) nor into a log line.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from pathlib import Path

from dispatcher.core.errors import ConfigError

# 32 bytes of randomness: far beyond guessing, and URL-safe so it can stand in a URL's userinfo.
_SECRET_BYTES = 32


def private_folder(path: Path) -> Path:
    """``path`` as a folder only its owner may enter (made if missing)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, mode 0600 from the first byte (never world-readable,
    not even for a moment) and atomically (a reader sees the old text or the new)."""
    private_folder(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def ensure_secret(path: Path) -> str:
    """The secret kept in ``path``; a new random one if there is none yet.

    Two processes starting at once agree on one secret: the new file is linked into place,
    which fails if another got there first, and then that one's is read.
    """
    if not path.exists():
        private_folder(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(secrets.token_urlsafe(_SECRET_BYTES) + "\n")
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return read_secret(path)


def read_secret(path: Path) -> str:
    """The secret in ``path``; ``ConfigError`` if it is missing, empty, or readable by others
    (a secret others can read is no longer one: the operator must know)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the secret: {exc.strerror}", path=path) from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the secret is readable by others (mode {stat.filemode(mode)}): "
            f"run `chmod 600 {path}` and replace the secret, since others may have read it",
            path=path,
        )
    if not text or "\n" in text:
        raise ConfigError("the secret must be one non-empty line", path=path)
    return text
