"""Reads a feature's Lua scripts from its ``scripts/`` folder (once, at import)."""

from __future__ import annotations

from importlib.resources import files


def read_script(package: str, name: str, *, prelude: str | None = None) -> str:
    """The text of ``package``'s ``scripts/{name}.lua``, after ``scripts/{prelude}.lua`` (the
    local functions several scripts share) when given."""
    folder = files(package).joinpath("scripts")
    parts = [prelude, name] if prelude else [name]
    return "".join(folder.joinpath(f"{part}.lua").read_text(encoding="utf-8") for part in parts)
