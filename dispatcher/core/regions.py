"""The five-level region tree (province > city > county > township > village) and its alert topics.

Pure: no I/O except reading a region file in ``RegionTree.from_csv``. Codes are the National
Bureau of Statistics division codes, 2+2+2+3+3 digits, so a region's level follows from its
code's length and every ancestor's code is a prefix of it.

A region file is UTF-8 CSV with the header ``code,name,level,parent``: ``level`` is 1-5 and
``parent`` is empty for a province. Rows may come in any order; the tree keeps file order.

Some townships are *virtual*: development zones, state farms and forest farms the statistics
list as townships but with no village of their own, only a placeholder "virtual community"
(虚拟社区, 虚拟生活区) or nothing at all; 马祖乡 of 连江县 is one. Nobody lives there as a
village, so they are not planned for drills and no office owes a drill for them.
"""

from __future__ import annotations

import bisect
import csv
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from dispatcher.core import wire
from dispatcher.core.errors import MalformedRegionCode, RegionFileError, UnknownRegion
from dispatcher.core.wire import ALERT_TOPIC_PREFIX

__all__ = [
    "ALERT_TOPIC_PREFIX",
    "CODE_LENGTHS",
    "REGION_FILE_HEADER",
    "Level",
    "Region",
    "RegionTree",
    "alert_topic",
    "code_from_alert_topic",
    "code_path",
    "level_of_code",
    "villages_without_terminal",
]

# How the statistics name a village that is a placeholder, not a village people live in.
VIRTUAL_VILLAGE_MARK = "虚拟"


class Level(IntEnum):
    PROVINCE = 1
    CITY = 2
    COUNTY = 3
    TOWNSHIP = 4
    VILLAGE = 5

    @property
    def label_zh(self) -> str:
        return _LABELS_ZH[self]

    @property
    def label_en(self) -> str:
        return _LABELS_EN[self]

    @property
    def code_length(self) -> int:
        return _LENGTHS[self]


_LABELS_ZH = {
    Level.PROVINCE: "省",
    Level.CITY: "市",
    Level.COUNTY: "县",
    Level.TOWNSHIP: "乡镇",
    Level.VILLAGE: "村",
}
_LABELS_EN = {
    Level.PROVINCE: "province",
    Level.CITY: "city",
    Level.COUNTY: "county",
    Level.TOWNSHIP: "township",
    Level.VILLAGE: "village",
}

CODE_LENGTHS: dict[int, Level] = {
    2: Level.PROVINCE,
    4: Level.CITY,
    6: Level.COUNTY,
    9: Level.TOWNSHIP,
    12: Level.VILLAGE,
}
_LENGTHS = {level: length for length, level in CODE_LENGTHS.items()}

REGION_FILE_HEADER = ("code", "name", "level", "parent")
_LEVEL_BY_TEXT = {str(int(level)): level for level in Level}
_LEVEL_ABOVE = {level: Level(level - 1) for level in Level if level > Level.PROVINCE}


def level_of_code(code: str) -> Level:
    """The level a code's length gives; MalformedRegionCode unless 2/4/6/9/12 ASCII digits."""
    level = CODE_LENGTHS.get(len(code))
    # isdigit() alone accepts full-width and superscript digits, which are not codes.
    if level is None or not (code.isascii() and code.isdigit()):
        raise MalformedRegionCode(code)
    return level


def code_path(code: str) -> list[str]:
    """The codes from the province down to ``code`` itself, by prefix alone (no tree needed)."""
    level_of_code(code)
    return wire.code_path(code)


def alert_topic(code: str) -> str:
    """The MQTT alert topic of a region: its code path under ``eb/v1/alert/``."""
    level_of_code(code)
    return wire.alert_topic(code)


def code_from_alert_topic(topic: str) -> str:
    """The region code an alert topic addresses; MalformedRegionCode (naming the topic) if it
    is not exactly what ``alert_topic`` would give, wildcards and stray slashes included."""
    if not topic.startswith(ALERT_TOPIC_PREFIX):
        raise MalformedRegionCode(topic)
    code = topic.rpartition("/")[2]
    try:
        expected = alert_topic(code)
    except MalformedRegionCode:
        raise MalformedRegionCode(topic) from None
    if topic != expected:
        raise MalformedRegionCode(topic)
    return code


@dataclass(frozen=True, slots=True)
class Region:
    code: str
    name: str
    level: Level
    parent: str | None


class RegionTree:
    """An immutable, validated region tree; every lookup validates the code it is given."""

    __slots__ = ("_by_code", "_children", "_counts", "_village_codes", "_virtual")

    def __init__(self, regions: dict[str, Region]) -> None:
        # Private: build through from_csv / from_regions, which check what this trusts.
        self._by_code = regions
        self._children: dict[str, list[Region]] = {code: [] for code in regions}
        self._counts = dict.fromkeys(Level, 0)
        for region in regions.values():
            self._counts[region.level] += 1
            if region.parent is not None:
                self._children[region.parent].append(region)
        # Sorted, so the villages under a code are one slice (every ancestor is a prefix).
        self._village_codes = sorted(r.code for r in regions.values() if r.level is Level.VILLAGE)
        self._virtual = frozenset(
            region.code
            for region in regions.values()
            if (region.level is Level.VILLAGE and VIRTUAL_VILLAGE_MARK in region.name)
            or (
                region.level is Level.TOWNSHIP
                and all(VIRTUAL_VILLAGE_MARK in v.name for v in self._children[region.code])
            )
        )

    @classmethod
    def from_csv(cls, path: Path | str) -> RegionTree:
        """Load and check a region file; RegionFileError names the file, line and field."""
        builder = _Builder(path)
        try:
            with open(path, encoding="utf-8-sig", newline="") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header is None or tuple(header) != REGION_FILE_HEADER:
                    got = "nothing" if header is None else repr(",".join(header))
                    raise RegionFileError(
                        f"the header must be {','.join(REGION_FILE_HEADER)!r}, got {got}",
                        path=path,
                        line=1,
                    )
                for row in reader:
                    if row:  # a blank line carries nothing; csv gives it as []
                        builder.add_row(row, reader.line_num)
        except OSError as exc:
            raise RegionFileError(
                f"cannot read the region file: {exc.strerror}", path=path
            ) from exc
        except UnicodeDecodeError as exc:
            raise RegionFileError("the region file is not UTF-8", path=path) from exc
        except csv.Error as exc:
            raise RegionFileError(f"not a readable CSV file: {exc}", path=path) from exc
        if not builder.regions:
            raise RegionFileError("the region file has no regions", path=path, line=2)
        return cls(builder.finish())

    @classmethod
    def from_regions(cls, regions: Iterable[Region]) -> RegionTree:
        """A tree from Region objects, with the same checks as ``from_csv`` (an empty tree is
        allowed here); the error's message names the offending code."""
        builder = _Builder(None)
        for region in regions:
            builder.add(region, None)
        return cls(builder.finish())

    def __len__(self) -> int:
        return len(self._by_code)

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def __iter__(self) -> Iterator[Region]:
        return iter(self._by_code.values())

    def __repr__(self) -> str:
        return f"<RegionTree {len(self)} regions>"

    def get(self, code: str) -> Region:
        region = self._by_code.get(code)
        if region is None:
            level_of_code(code)  # a malformed code deserves that error, not "unknown"
            raise UnknownRegion(code)
        return region

    def name(self, code: str) -> str:
        return self.get(code).name

    def level(self, code: str) -> Level:
        return self.get(code).level

    def parent(self, code: str) -> Region | None:
        parent = self.get(code).parent
        return None if parent is None else self._by_code[parent]

    def ancestors(self, code: str) -> list[Region]:
        """Province first, without the region itself."""
        return self.path(code)[:-1]

    def path(self, code: str) -> list[Region]:
        """Province first, ending with the region itself."""
        region = self.get(code)
        path = [region]
        while region.parent is not None:
            region = self._by_code[region.parent]
            path.append(region)
        path.reverse()
        return path

    def children(self, code: str) -> list[Region]:
        return list(self._children[self.get(code).code])

    def descendants(self, code: str, level: Level | None = None) -> list[Region]:
        """Everything below ``code`` (not itself), depth first in file order; only ``level``
        if given."""
        start = self.get(code)
        if level is not None and level <= start.level:
            return []
        found: list[Region] = []
        stack = list(reversed(self._children[start.code]))
        while stack:
            region = stack.pop()
            if level is None or region.level == level:
                found.append(region)
            if level is None or region.level < level:
                stack.extend(reversed(self._children[region.code]))
        return found

    def villages(self, code: str) -> list[str]:
        """The village codes at or below ``code``, depth first in file order."""
        if self.level(code) is Level.VILLAGE:
            return [code]
        return [village.code for village in self.descendants(code, level=Level.VILLAGE)]

    def village_codes(self, code: str) -> list[str]:
        """The village codes at or below ``code``, sorted: ``villages`` in code order, found
        by bisection rather than a walk of the tree (an alert's status reads it each time)."""
        prefix = self.get(code).code
        codes = self._village_codes
        start = bisect.bisect_left(codes, prefix)
        # ":" sorts right after "9": every code starting with the prefix sorts before it.
        return codes[start : bisect.bisect_left(codes, prefix + ":", start)]

    def is_within(self, inner: str, outer: str) -> bool:
        """True if ``inner`` is ``outer`` or below it; both must be in the tree."""
        self.get(inner)
        self.get(outer)
        # A checked tree makes every parent a prefix of its child, so a prefix is an ancestor.
        return inner.startswith(outer)

    def cover(self, codes: Iterable[str]) -> list[str]:
        """The given codes, sorted, without duplicates and without any code inside another
        given code. Never promotes to a parent, even when all its children are given: the
        cover addresses what was asked for, no more."""
        if isinstance(codes, str):
            # A bare string would iterate as single digits and fail confusingly.
            raise TypeError("cover() takes an iterable of codes, not one code")
        wanted = {self.get(code).code for code in codes}
        return sorted(
            code for code in wanted if not any(prefix in wanted for prefix in code_path(code)[:-1])
        )

    def topic(self, code: str) -> str:
        return alert_topic(self.get(code).code)

    def subscription_topics(self, code: str) -> list[str]:
        """The exact alert topics a terminal at ``code`` subscribes to, province first."""
        return [alert_topic(region.code) for region in self.path(code)]

    def is_virtual(self, code: str) -> bool:
        """True for a virtual township (no village of its own, or only placeholder ones) and
        for a placeholder village (its name has 虚拟); see the module docstring."""
        return self.get(code).code in self._virtual

    def townships(self, code: str, *, virtual: bool = False) -> list[Region]:
        """The townships at or below ``code`` (none below a township), in file order; the
        virtual ones only with ``virtual``: drills and compliance leave them out."""
        region = self.get(code)
        if region.level is Level.VILLAGE:
            return []
        found = [region] if region.level is Level.TOWNSHIP else self.descendants(
            code, Level.TOWNSHIP
        )  # fmt: skip
        return [t for t in found if virtual or t.code not in self._virtual]

    def find(self, text: str, *, limit: int = 50) -> list[Region]:
        """Regions whose name contains ``text`` (or whose code starts with it, for digits),
        highest level first, then in file order; at most ``limit``."""
        needle = text.strip()
        if not needle:
            return []
        by_code = needle.isascii() and needle.isdigit()
        found = [
            region
            for region in self._by_code.values()
            if (region.code.startswith(needle) if by_code else needle in region.name)
        ]
        found.sort(key=lambda region: region.level)
        return found[:limit]

    def full_name(self, code: str) -> str:
        """The names from the province down, as people write an address: 福建省/福州市/连江县."""
        return "/".join(region.name for region in self.path(code))

    def roots(self) -> list[Region]:
        return [region for region in self._by_code.values() if region.parent is None]

    def counts(self) -> dict[Level, int]:
        """Regions per level, every level present (zero if none)."""
        return dict(self._counts)


class _Builder:
    """Checks regions one by one, then parents once all are in (rows may come in any order)."""

    __slots__ = ("lines", "path", "regions")

    def __init__(self, path: Path | str | None) -> None:
        self.path = path
        self.regions: dict[str, Region] = {}
        self.lines: dict[str, int | None] = {}

    def fail(self, message: str, line: int | None, field: str | None) -> RegionFileError:
        return RegionFileError(message, path=self.path, line=line, field=field)

    def add_row(self, row: list[str], line: int) -> None:
        if len(row) != len(REGION_FILE_HEADER):
            raise self.fail(
                f"expected {len(REGION_FILE_HEADER)} fields "
                f"({','.join(REGION_FILE_HEADER)}), got {len(row)}",
                line,
                None,
            )
        code, name, level_text, parent = row
        # A lookup, not int(): int() also takes " 3", "+3" and "0_3".
        level = _LEVEL_BY_TEXT.get(level_text)
        if level is None:
            self._check_code(code, line)  # a malformed code is the first thing to report
            raise self.fail(f"level {level_text!r} of {code!r} is not 1 to 5", line, "level")
        self.add(Region(code, name, level, parent or None), line)

    def _check_code(self, code: str, line: int | None) -> Level:
        try:
            return level_of_code(code)
        except MalformedRegionCode as exc:
            raise self.fail(exc.message, line, "code") from None

    def add(self, region: Region, line: int | None) -> None:
        code = region.code
        level = self._check_code(code, line)
        if region.level != level:
            raise self.fail(
                f"{code!r} is a {level.label_en} code ({len(code)} digits) "
                f"but its level says {_describe_level(region.level)}",
                line,
                "level",
            )
        if not region.name.strip():
            raise self.fail(f"{code!r} has an empty name", line, "name")
        self._check_parent_form(region, level, line)
        if code in self.regions:
            first = self.lines[code]
            where = f" (first on line {first})" if first is not None else ""
            raise self.fail(f"duplicate code {code!r}{where}", line, "code")
        self.regions[code] = region
        self.lines[code] = line

    def _check_parent_form(self, region: Region, level: Level, line: int | None) -> None:
        code, parent = region.code, region.parent
        if level is Level.PROVINCE:
            if parent is not None:
                raise self.fail(
                    f"province {code!r} cannot have a parent (got {parent!r})", line, "parent"
                )
            return
        up = _LEVEL_ABOVE[level]
        if parent is None:
            raise self.fail(
                f"{level.label_en} {code!r} needs its {up.label_en} as parent", line, "parent"
            )
        if parent == code[: up.code_length]:
            return  # the one right answer; the checks below only explain a wrong one
        try:
            parent_level = level_of_code(parent)
        except MalformedRegionCode:
            raise self.fail(
                f"the parent {parent!r} of {code!r} is malformed: a {up.label_en} code "
                f"is {up.code_length} digits",
                line,
                "parent",
            ) from None
        if parent_level != up:
            raise self.fail(
                f"the parent of {level.label_en} {code!r} must be a {up.label_en}, "
                f"but {parent!r} is a {parent_level.label_en}",
                line,
                "parent",
            )
        if not code.startswith(parent):
            raise self.fail(
                f"{code!r} does not start with its parent's code {parent!r}", line, "parent"
            )

    def finish(self) -> dict[str, Region]:
        for code, region in self.regions.items():
            if region.parent is not None and region.parent not in self.regions:
                raise self.fail(
                    f"the parent {region.parent!r} of {code!r} is not in the region file",
                    self.lines[code],
                    "parent",
                )
        return self.regions


def _describe_level(level: object) -> str:
    if isinstance(level, Level):
        return f"{int(level)} ({level.label_en})"
    return repr(level)


def villages_without_terminal(
    tree: RegionTree, areas: Iterable[str], reached: Collection[str]
) -> list[Region]:
    """The villages under ``areas`` (codes in the tree) that hold none of the ``reached``
    region codes: no registered terminal there, so no loudspeaker sounds. Placeholder villages
    are left out (nobody lives there). Sorted by code."""
    # A terminal registered above village level (a township's own loudspeaker) reaches no
    # particular village, so only village codes count.
    found: set[str] = set()
    for area in areas:
        found.update(
            code
            for code in tree.village_codes(area)
            if code not in reached and not tree.is_virtual(code)
        )
    return [tree.get(code) for code in sorted(found)]
