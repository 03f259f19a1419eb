"""``ebd``'s help speaks the chosen language: Chinese texts under ``--lang zh``, English ones
(with no Chinese in them but the example values they always had) under ``--lang en``, for
every command and subcommand the parser has."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.cli import lang
from dispatcher.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]

# Chinese characters, and the CJK and full-width punctuation Chinese texts are written with.
CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
# Example values the English texts give in Chinese, as an operator types them.
ENGLISH_EXAMPLES = ("台风", "黄岐")


def subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def command_paths(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """``()`` for ``ebd`` itself, then every subcommand's path, depth first."""
    yield path
    for name, child in subparsers(parser):
        yield from command_paths(child, (*path, name))


PATHS = list(command_paths(build_parser()))


def parser_at(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        parser = dict(subparsers(parser))[name]
    return parser


def help_texts(parser: argparse.ArgumentParser) -> list[str]:
    """What ``--help`` of ``parser`` says in words: its description, each option's and
    argument's help, and each subcommand's line (arguments without help have none)."""
    texts = [parser.description] if parser.description else []
    for action in parser._actions:
        if action.help and action.help != argparse.SUPPRESS:
            texts.append(action.help)
        if isinstance(action, argparse._SubParsersAction):
            texts.extend(choice.help for choice in action._choices_actions if choice.help)
    return texts


def without_examples(text: str) -> str:
    for example in ENGLISH_EXAMPLES:
        text = text.replace(example, "")
    return text


@pytest.fixture(autouse=True)
def _restore_language() -> Iterator[None]:
    """Each test chooses a language; the process's choice is put back after it."""
    before = lang.current()
    yield
    lang.choose(["--lang", before], {})


def test_the_walk_finds_every_command() -> None:
    assert len(PATHS) > 40
    for expected in [
        (),
        ("alerts", "issue"),
        ("terminals", "rotate-credentials"),
        ("drills", "acks"),
        ("audit", "export"),
        ("config", "check"),
        ("offices", "token"),
        ("regions", "find"),
    ]:
        assert expected in PATHS


@pytest.mark.parametrize("language", ["zh", "en"])
@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(("ebd", *path)))
def test_help_is_in_the_chosen_language(path: tuple[str, ...], language: str) -> None:
    lang.choose(["--lang", language], {})
    parser = parser_at(path)
    texts = help_texts(parser)
    assert texts, "no help at all"
    if language == "zh":
        untranslated = [text for text in texts if not HAN.search(text)]
        assert untranslated == []
        assert HAN.search(parser.format_help())
    else:
        chinese = [text for text in texts if CJK.search(without_examples(text))]
        assert chinese == []
        assert not CJK.search(without_examples(parser.format_help()))


def test_the_english_examples_are_still_there() -> None:
    """The allowance above is for texts that exist: if one goes, the allowance goes too."""
    lang.choose(["--lang", "en"], {})
    english = "\n".join(text for path in PATHS for text in help_texts(parser_at(path)))
    for example in ENGLISH_EXAMPLES:
        assert example in english


def test_the_language_is_chosen_per_build() -> None:
    lang.choose(["--lang", "en"], {})
    assert build_parser().description == "Emergency broadcast and early-warning dispatch engine"
    lang.choose(["--lang", "zh"], {})
    assert build_parser().description == "应急广播与预警分发引擎"


@pytest.mark.parametrize("language", lang.LANGS)
def test_python_m_dispatcher_help_exits_0(language: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "--lang", language, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ebd")
    if language == "zh":
        assert "应急广播与预警分发引擎" in result.stdout
    else:
        assert "Emergency broadcast and early-warning dispatch engine" in result.stdout
        assert not CJK.search(without_examples(result.stdout))
