"""``ebd regions show`` and ``ebd regions find``: the region file, read locally, so an office
finds the codes it needs (``黄岐`` → ``350122112``) before it writes a CSV or an alert."""

from __future__ import annotations

import argparse

from dispatcher.cli.data import regions_file
from dispatcher.core.regions import Level, RegionTree
from drills.report import pad, text_width

_VIRTUAL = "虚拟 virtual"
_PLURAL = {Level.CITY: "cities", Level.COUNTY: "counties", Level.TOWNSHIP: "townships",
           Level.VILLAGE: "villages"}  # fmt: skip


def _tree(args: argparse.Namespace) -> RegionTree:
    return RegionTree.from_csv(regions_file(args.regions_file))


def cmd_regions_show(args: argparse.Namespace) -> int:
    """The region's path, level and topic, then a line for each child with its counts."""
    tree = _tree(args)
    region = tree.get(args.code)
    children = tree.children(region.code)
    lines = [
        " > ".join(f"{r.name}({r.code})" for r in tree.path(region.code)),
        f"level: {region.level.label_zh} / {region.level.label_en}"
        + (
            f"  ({_VIRTUAL}: no village of its own, not planned for drills)"
            if tree.is_virtual(region.code)
            else ""
        ),
        f"topic: {tree.topic(region.code)}",
        f"children: {len(children)}",
    ]
    if children:
        # Per child, how many regions of each level lie below it.
        below = [level for level in Level if level > children[0].level]
        header = ["代码 code", "名称 name", *(f"{lv.label_zh} {_PLURAL[lv]}" for lv in below)]
        rows = [header]
        for child in children:
            counts = [str(len(tree.descendants(child.code, level))) for level in below]
            name = child.name + (f" ({_VIRTUAL})" if tree.is_virtual(child.code) else "")
            rows.append([child.code, name, *counts])
        widths = [max(text_width(row[i]) for row in rows) for i in range(len(header))]
        lines.append("")
        lines.extend(
            "  ".join(pad(cell, widths[i], right=i >= 2) for i, cell in enumerate(row)).rstrip()
            for row in rows
        )
    print("\n".join(lines))
    return 0


def cmd_regions_find(args: argparse.Namespace) -> int:
    """Regions whose name contains the text (or whose code starts with the digits)."""
    tree = _tree(args)
    found = tree.find(args.text, limit=args.limit + 1)
    if not found:
        print(f"ebd: no region's name contains {args.text!r} / 没有找到")
        return 1
    for region in found[: args.limit]:
        mark = f"  ({_VIRTUAL})" if tree.is_virtual(region.code) else ""
        print(
            f"{region.code:<12}  {pad(region.level.label_zh, 4)} {region.level.label_en:<8}  "
            f"{tree.full_name(region.code)}{mark}"
        )
    if len(found) > args.limit:
        print(f"… more than {args.limit}; give more of the name, or --limit")
    return 0
