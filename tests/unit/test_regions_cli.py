"""``ebd regions find`` and ``ebd regions show``: codes found by name, children with counts,
virtual townships marked; over the region file the project ships."""

from __future__ import annotations

import pytest

from dispatcher.cli.main import main


def test_find_gives_code_level_and_full_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["regions", "find", "黄岐"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["350122112", "乡镇", "township", "福建省/福州市/连江县/黄岐镇"]
    assert len(lines) == 4  # the township and three villages named 黄岐…
    assert all("黄岐" in line for line in lines)


def ebd_out(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """What ``ebd regions ARGV`` prints, once it exited 0."""
    assert main(["regions", *argv]) == 0
    return capsys.readouterr().out


def test_find_marks_virtual_townships_and_says_when_it_cut(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "350122400" in ebd_out(capsys, "find", "马祖乡")
    assert "虚拟 virtual" in ebd_out(capsys, "find", "马祖")
    lines = ebd_out(capsys, "find", "社区", "--limit", "3").splitlines()
    assert len(lines) == 4
    assert lines[-1].startswith("… more than 3")


def test_find_of_nothing_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["regions", "find", "不存在的地名"]) == 1
    assert "不存在的地名" in capsys.readouterr().out


def test_show_lists_children_with_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["regions", "show", "350122"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "福建省(35) > 福州市(3501) > 连江县(350122)"
    assert "children: 23" in lines
    header = next(line for line in lines if line.startswith("代码 code"))
    assert header.split()[-2:] == ["村", "villages"]
    huangqi = next(line for line in lines if line.startswith("350122112"))
    assert huangqi.split() == ["350122112", "黄岐镇", "11"]
    mazu = next(line for line in lines if line.startswith("350122400"))
    assert "虚拟 virtual" in mazu


def test_show_of_a_virtual_township_says_it_is_not_drilled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "not planned for drills" in ebd_out(capsys, "show", "350122400")
    fuzhou = next(line for line in ebd_out(capsys, "show", "35").splitlines() if "福州市" in line)
    assert fuzhou.split() == ["3501", "福州市", "13", "186", "3022"]
