"""The language ``ebd`` speaks to people: Chinese by default, English on request.

The rule, in order: ``--lang zh|en`` anywhere on the command line, then ``EBD_LANG``, then the
locale (``LC_ALL``, ``LC_MESSAGES``, ``LANG``, the first one set): one starting with ``en``
gives English; anything else, including no locale at all, gives Chinese, the language of the
offices the tool is for. It decides help texts and table labels; JSON output never changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Literal

Lang = Literal["zh", "en"]
LANGS: tuple[Lang, ...] = ("zh", "en")

_current: Lang = "zh"


def from_environment(env: Mapping[str, str]) -> Lang:
    """The language ``EBD_LANG`` or else the locale variables in ``env`` ask for."""
    chosen = env.get("EBD_LANG", "").strip().lower()
    if chosen in LANGS:
        return "zh" if chosen == "zh" else "en"
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name, "")
        if value:
            return "en" if value.lower().startswith("en") else "zh"
    return "zh"


def choose(argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """Sets the language from ``argv`` and the environment; ``argv`` without ``--lang``.

    ``--lang`` is taken out before argparse sees it, so that it may stand anywhere (also
    after ``--help``, which argparse acts on as soon as it reads it). A ``--lang`` with a value
    other than zh or en is left in place for the parser to refuse."""
    global _current  # one language per process, chosen once in main
    _current = from_environment(os.environ if env is None else env)
    rest: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        value: str | None = None
        if arg == "--lang" and index + 1 < len(argv):
            value = argv[index + 1]
            step = 2
        elif arg.startswith("--lang="):
            value = arg.partition("=")[2]
            step = 1
        if value in LANGS:
            _current = "zh" if value == "zh" else "en"
            index += step
            continue
        rest.append(arg)
        index += 1
    return rest


def current() -> Lang:
    return _current


def t(zh: str, en: str) -> str:
    """``zh`` or ``en``, as the chosen language says."""
    return zh if _current == "zh" else en
